//! Per-room series kept apart from the registry and written to the text format
//! directly.
//!
//! A registry's `gather()` copies every series into protobuf structures (every label
//! pair a fresh `String`) before the encoder walks them again: at 10,000 rooms that is
//! some 380,000 series and most of a scrape's time. A [`TextFamily`] keeps each series'
//! label text rendered once, when the series is created, in the order a registry sorts
//! them, so a scrape only appends names, label text and values. Values are written as
//! the prometheus crate writes them (an `f64` with `to_string`), so the exposition is
//! the same, byte for byte ([`tests`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One series' value: an `f64`, stored as its bits.
#[derive(Debug, Default)]
pub struct Value(AtomicU64);

impl Value {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn inc_by(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + v).to_bits()));
    }
}

struct Entry {
    /// `{a="..",b=".."}`, escaped, label names in alphabetical order.
    labels: Box<str>,
    value: Arc<Value>,
}

/// A family of series with the same label names, like a prometheus `*Vec`.
pub struct TextFamily {
    name: String,
    help: String,
    kind: Kind,
    /// As callers pass values.
    label_names: &'static [&'static str],
    /// Indices into `label_names`, alphabetical: how a registry orders label pairs.
    sorted: Vec<usize>,
    /// By label values in `sorted` order, joined by NUL: a registry sorts series by
    /// those values, and a `BTreeMap` keeps them so.
    series: RwLock<BTreeMap<Box<str>, Entry>>,
}

/// Series read ahead of their copy when rendering.
const CHUNK: usize = 64;

thread_local! {
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl TextFamily {
    pub fn new(name: &str, help: &str, kind: Kind, label_names: &'static [&'static str]) -> TextFamily {
        let mut sorted: Vec<usize> = (0..label_names.len()).collect();
        sorted.sort_by_key(|&i| label_names[i]);
        TextFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            label_names,
            sorted,
            series: RwLock::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn with_key<T>(&self, values: &[&str], f: impl FnOnce(&str) -> T) -> T {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}: label values", self.name);
        KEY.with(|k| {
            let mut k = k.borrow_mut();
            k.clear();
            for (n, &i) in self.sorted.iter().enumerate() {
                if n > 0 {
                    k.push('\0');
                }
                k.push_str(values[i]);
            }
            f(&k)
        })
    }

    /// The series with these label values (in `label_names` order), created at 0.
    pub fn with_label_values(&self, values: &[&str]) -> Arc<Value> {
        self.with_key(values, |key| {
            if let Some(e) = self.series.read().expect("poisoned").get(key) {
                return e.value.clone();
            }
            let mut series = self.series.write().expect("poisoned");
            let e = series
                .entry(key.into())
                .or_insert_with(|| Entry { labels: self.label_text(values).into(), value: Arc::default() });
            e.value.clone()
        })
    }

    /// The series' value, without creating it.
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        self.with_key(values, |key| self.series.read().expect("poisoned").get(key).map(|e| e.value.get()))
    }

    /// Removes the series; whether it existed.
    pub fn remove_label_values(&self, values: &[&str]) -> bool {
        self.with_key(values, |key| self.series.write().expect("poisoned").remove(key).is_some())
    }

    pub fn len(&self) -> usize {
        self.series.read().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn label_text(&self, values: &[&str]) -> String {
        let mut s = String::with_capacity(64);
        for (n, &i) in self.sorted.iter().enumerate() {
            s.push(if n == 0 { '{' } else { ',' });
            s.push_str(self.label_names[i]);
            s.push_str("=\"");
            escape_into(&mut s, values[i], true);
            s.push('"');
        }
        if !s.is_empty() {
            s.push('}');
        }
        s
    }

    /// Appends the family in the text format; nothing when it has no series, as a
    /// registry prunes empty families.
    pub fn render_into(&self, out: &mut String) {
        let series = self.series.read().expect("poisoned");
        if series.is_empty() {
            return;
        }
        if !self.help.is_empty() {
            out.push_str("# HELP ");
            out.push_str(&self.name);
            out.push(' ');
            escape_into(out, &self.help, false);
            out.push('\n');
        }
        out.push_str("# TYPE ");
        out.push_str(&self.name);
        out.push_str(match self.kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
        // Each series' label text and value sit apart on the heap, so copying them is
        // mostly waiting for memory. Reading a chunk's values and touching its label
        // texts first, in a loop with nothing else to do, has their loads in flight
        // together; the copies then find them in cache.
        let mut chunk: Vec<(&str, f64)> = Vec::with_capacity(CHUNK);
        let mut entries = series.values();
        loop {
            chunk.clear();
            let mut touched = 0u8;
            for e in entries.by_ref().take(CHUNK) {
                let b = e.labels.as_bytes();
                touched ^= b.first().copied().unwrap_or(0) ^ b.last().copied().unwrap_or(0);
                chunk.push((&e.labels, e.value.get()));
            }
            if chunk.is_empty() {
                break;
            }
            std::hint::black_box(touched);
            for &(labels, value) in &chunk {
                out.push_str(&self.name);
                out.push_str(labels);
                out.push(' ');
                write_value(out, value);
                out.push('\n');
            }
        }
    }

    /// Every series: its label values in `label_names` order, and its value.
    pub fn for_each(&self, mut f: impl FnMut(&[&str], f64)) {
        let series = self.series.read().expect("poisoned");
        let mut values: Vec<&str> = vec![""; self.label_names.len()];
        for (key, e) in series.iter() {
            for (part, &i) in key.split('\0').zip(&self.sorted) {
                values[i] = part;
            }
            f(&values, e.value.get());
        }
    }
}

/// `v` as the prometheus crate writes it (`f64::to_string`), with whole numbers, most
/// of the values, written as integers: the same text, without float formatting.
fn write_value(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The text format's escaping, as the prometheus crate does it: `\` and newlines, and
/// in label values `"` too.
fn escape_into(out: &mut String, s: &str, quotes: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{CounterVec, GaugeVec, Opts, Registry};

    const LABELS: &[&str] = &["org_id", "room_id", "platform", "window"];

    /// A family longer than a render chunk, and one a series short of it or over it,
    /// renders every series once and in order.
    #[test]
    fn renders_families_of_several_chunks() {
        for n in [CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let reg = Registry::new();
            let g = GaugeVec::new(Opts::new("lf_gauge", "help"), LABELS).unwrap();
            reg.register(Box::new(g.clone())).unwrap();
            let tg = TextFamily::new("lf_gauge", "help", Kind::Gauge, LABELS);
            for i in 0..n {
                let room = format!("r{}", i * 7919 % 1000);
                let l = ["org", room.as_str(), "douyin", "1m"];
                g.with_label_values(&l).set(i as f64 / 4.0);
                tg.with_label_values(&l).set(i as f64 / 4.0);
            }
            let mut got = String::new();
            tg.render_into(&mut got);
            assert_eq!(got, crate::render(&reg), "{n} series");
            assert_eq!(got.lines().count(), n + 2, "{n} series, help and type");
        }
    }

    /// The same updates through prometheus' vectors and through text families give the
    /// same text: label order, series order, escaping, NaN, integers and fractions.
    #[test]
    fn renders_what_a_registry_renders() {
        let reg = Registry::new();
        let g = GaugeVec::new(Opts::new("lf_gauge", "a gauge \\ with\nhelp"), LABELS).unwrap();
        let c = CounterVec::new(Opts::new("lf_count_total", "a counter"), &LABELS[..3]).unwrap();
        reg.register(Box::new(g.clone())).unwrap();
        reg.register(Box::new(c.clone())).unwrap();
        let tg = TextFamily::new("lf_gauge", "a gauge \\ with\nhelp", Kind::Gauge, LABELS);
        let tc = TextFamily::new("lf_count_total", "a counter", Kind::Counter, &LABELS[..3]);
        let rooms = ["r2", "r10", "r1", "a \"quoted\"\\ room\nx", "房间", ""];
        let values = [
            0.0,
            1.0,
            2.5,
            f64::NAN,
            1e21,
            -3.0,
            123456789.0,
            f64::INFINITY,
            -0.0,
            999999999999999.0,
            1e15,
            0.1,
        ];
        for (n, room) in rooms.iter().enumerate() {
            for (w, window) in ["5m/10s", "1m", "10m/1m"].iter().enumerate() {
                let v = values[(n + w) % values.len()];
                let l = ["org", room, if n % 2 == 0 { "douyin" } else { "kuaishou" }, window];
                g.with_label_values(&l).set(v);
                tg.with_label_values(&l).set(v);
            }
            let l = ["org", room, "douyin"];
            c.with_label_values(&l).inc_by(n as f64 * 1.5);
            tc.with_label_values(&l).inc_by(n as f64 * 1.5);
        }
        assert!(g.remove_label_values(&["org", "r1", "douyin", "1m"]).is_ok());
        assert!(tg.remove_label_values(&["org", "r1", "douyin", "1m"]));
        assert!(!tg.remove_label_values(&["org", "r1", "douyin", "1m"]), "gone already");
        let want = crate::render(&reg);
        let mut got = String::new();
        tc.render_into(&mut got);
        tg.render_into(&mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn values_are_written_as_f64_to_string_writes_them() {
        let mut values =
            vec![0.0, -0.0, 1.0, -1.0, 0.1, 2.5, 1e15, 1e15 - 1.0, -1e15 + 1.0, 1e21, 123456789.0];
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, 9.007199254740993e15]);
        values.extend((0..2000).map(|i| (i as f64 * 7919.0).powf(1.7) / if i % 3 == 0 { 1.0 } else { 7.0 }));
        for v in values {
            let mut out = String::new();
            write_value(&mut out, v);
            assert_eq!(out, v.to_string(), "{v:?}");
        }
    }

    #[test]
    fn an_empty_family_renders_nothing_and_reads_give_back_values() {
        let f = TextFamily::new("lf_x", "x", Kind::Gauge, &LABELS[..3]);
        let mut out = String::new();
        f.render_into(&mut out);
        assert_eq!(out, "");
        assert_eq!(f.get(&["o", "r", "p"]), None, "a read creates nothing");
        assert!(f.is_empty());
        f.with_label_values(&["o", "r", "p"]).inc_by(2.0);
        f.with_label_values(&["o", "r", "p"]).inc_by(3.0);
        assert_eq!(f.get(&["o", "r", "p"]), Some(5.0));
        let mut seen = Vec::new();
        f.for_each(|l, v| seen.push((l.join("|"), v)));
        assert_eq!(seen, vec![("o|r|p".to_owned(), 5.0)]);
    }
}
