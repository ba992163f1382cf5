//! The room directory (`[wall] rooms_file`): per `room_id` a display name, the anchor
//! (host), the brand and account, and the session's GMV target. TOML or CSV, by the
//! file's extension; re-read when its modification time or size changes. A file that
//! no longer reads keeps the previous directory (and says why, on the wall and in the
//! log) until it is fixed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use livefunnel_metrics::RoomInfo;
use serde::Deserialize;

/// How often the file's modification time is looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// The columns of a CSV directory, also the keys of a TOML `[[rooms]]` entry.
const COLUMNS: [&str; 6] = ["room_id", "name", "anchor", "brand", "account", "gmv_target_cents"];

/// Directory entries by `room_id`.
pub type Entries = HashMap<String, RoomInfo>;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("room directory {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("room directory {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    rooms: Vec<TomlRoom>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlRoom {
    room_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    anchor: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    account: String,
    gmv_target_cents: Option<i64>,
}

/// Reads a directory file (`.toml` or `.csv`).
pub fn read(path: &Path) -> Result<Entries, DirectoryError> {
    let shown = path.display().to_string();
    let invalid = |message: String| DirectoryError::Invalid { path: shown.clone(), message };
    let text =
        std::fs::read_to_string(path).map_err(|source| DirectoryError::Io { path: shown.clone(), source })?;
    let rooms = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("toml") => parse_toml(&text).map_err(invalid)?,
        Some("csv") => parse_csv(&text).map_err(invalid)?,
        _ => return Err(invalid("name it *.toml or *.csv: the extension says how to read it".into())),
    };
    let mut out = Entries::with_capacity(rooms.len());
    for (line, room_id, info) in rooms {
        if room_id.trim().is_empty() {
            return Err(invalid(format!("{line}: room_id is empty")));
        }
        if info.gmv_target_cents.is_some_and(|t| t < 0) {
            return Err(invalid(format!(
                "{line}: gmv_target_cents is negative: write the target in fen, like 5000000"
            )));
        }
        if out.insert(room_id.clone(), info).is_some() {
            return Err(invalid(format!("{line}: room_id `{room_id}` is listed twice")));
        }
    }
    Ok(out)
}

type Parsed = Vec<(String, String, RoomInfo)>;

fn parse_toml(text: &str) -> Result<Parsed, String> {
    let file: TomlFile = toml::from_str(text).map_err(|e| {
        let m = e.message().to_owned();
        match e.span() {
            Some(span) => format!("line {}: {m}", text[..span.start].lines().count().max(1)),
            None => m,
        }
    })?;
    Ok(file
        .rooms
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let info = RoomInfo {
                name: r.name,
                anchor: r.anchor,
                brand: r.brand,
                account: r.account,
                gmv_target_cents: r.gmv_target_cents,
            };
            (format!("[[rooms]] entry {}", i + 1), r.room_id, info)
        })
        .collect())
}

fn parse_csv(text: &str) -> Result<Parsed, String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| format!("the header line: {e}"))?.clone();
    let mut index = [None; COLUMNS.len()];
    for (i, h) in header.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| *c == h) {
            Some(c) => index[c] = Some(i),
            None => {
                return Err(format!(
                    "the header names an unknown column `{h}`: the columns are {}",
                    COLUMNS.join(", ")
                ))
            }
        }
    }
    if index[0].is_none() {
        return Err(format!(
            "the header has no room_id column: the first line names the columns, {}",
            COLUMNS.join(",")
        ));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let line = format!("line {}", record.position().map_or(0, |p| p.line()));
        let field = |c: usize| index[c].and_then(|i| record.get(i)).unwrap_or("").to_owned();
        let target = field(5);
        let gmv_target_cents = if target.is_empty() {
            None
        } else {
            Some(target.parse::<i64>().map_err(|_| {
                format!("{line}: gmv_target_cents `{target}` is not a whole number of fen, like 5000000")
            })?)
        };
        let info = RoomInfo {
            name: field(1),
            anchor: field(2),
            brand: field(3),
            account: field(4),
            gmv_target_cents,
        };
        out.push((line, field(0), info));
    }
    Ok(out)
}

/// The directory as last read, shared with the wall's handlers.
#[derive(Debug, Default)]
pub struct Directory {
    pub entries: Entries,
    /// Why the file's latest version was not taken (the previous entries are kept).
    pub error: Option<String>,
}

pub type Shared = Arc<RwLock<Directory>>;

/// Loads the file now (an error is the caller's to report), then follows its changes
/// until `stop`.
pub fn watch(path: PathBuf, stop: tokio_util::sync::CancellationToken) -> Result<Shared, DirectoryError> {
    let entries = read(&path)?;
    tracing::info!(path = %path.display(), rooms = entries.len(), "room directory loaded");
    let shared: Shared = Arc::new(RwLock::new(Directory { entries, error: None }));
    let out = shared.clone();
    let mut seen = stamp(&path);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.cancelled() => return,
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let result = read(&path);
            let mut d = shared.write().expect("poisoned");
            match result {
                Ok(entries) => {
                    tracing::info!(path = %path.display(), rooms = entries.len(), "room directory reloaded");
                    d.entries = entries;
                    d.error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "room directory not reloaded: keeping the previous one until the file is fixed");
                    d.error = Some(e.to_string());
                }
            }
        }
    });
    Ok(out)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn toml_and_csv_directories_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let toml = write(
            dir.path(),
            "rooms.toml",
            "[[rooms]]\nroom_id = \"room-0001\"\nname = \"星芒旗舰店\"\nanchor = \"小雅\"\nbrand = \"星芒\"\n\
             account = \"xingmang_official\"\ngmv_target_cents = 5000000\n\n[[rooms]]\nroom_id = \"room-0002\"\n",
        );
        let csv = write(
            dir.path(),
            "rooms.csv",
            "\u{feff}room_id,name,anchor,brand,account,gmv_target_cents\nroom-0001,星芒旗舰店,小雅,星芒,xingmang_official,5000000\n\
             room-0002,,,,,\n",
        );
        let a = read(&toml).unwrap();
        let b = read(&csv).unwrap();
        assert_eq!(a, b);
        let r1 = &a["room-0001"];
        assert_eq!(
            (r1.name.as_str(), r1.anchor.as_str(), r1.gmv_target_cents),
            ("星芒旗舰店", "小雅", Some(5_000_000))
        );
        assert_eq!(a["room-0002"], RoomInfo::default());
        // Columns in any order, some left out, quoted commas.
        let csv = write(dir.path(), "b.csv", "name,room_id\n\"Shop, Main\",r9\n");
        assert_eq!(read(&csv).unwrap()["r9"].name, "Shop, Main");
    }

    #[test]
    fn errors_name_the_file_the_place_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let msg = |name: &str, text: &str| read(&write(dir.path(), name, text)).unwrap_err().to_string();
        let m = msg("a.csv", "room_id,price\nr1,3\n");
        assert!(m.contains("a.csv") && m.contains("unknown column `price`"), "{m}");
        let m = msg("b.csv", "room_id,gmv_target_cents\nr1,3\nr2,5k\n");
        assert!(m.contains("line 3") && m.contains("`5k`"), "{m}");
        let m = msg("c.csv", "room_id\nr1\nr1\n");
        assert!(m.contains("listed twice"), "{m}");
        let m = msg("d.toml", "[[rooms]]\nroom_id = \"r1\"\nprice = 3\n");
        assert!(m.contains("d.toml") && m.contains("price"), "{m}");
        let m = msg("e.json", "{}");
        assert!(m.contains("*.toml or *.csv"), "{m}");
        let m = msg("f.csv", "name\nx\n");
        assert!(m.contains("no room_id column"), "{m}");
        let m = read(&dir.path().join("missing.toml")).unwrap_err().to_string();
        assert!(m.contains("missing.toml"), "{m}");
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "rooms.csv", "room_id,name\nr1,One\n");
        let stop = tokio_util::sync::CancellationToken::new();
        let d = watch(p.clone(), stop.clone()).unwrap();
        assert_eq!(d.read().unwrap().entries["r1"].name, "One");
        let shared = d.clone();
        let wait = move |f: &dyn Fn(&Directory) -> bool| {
            let d = shared.clone();
            let ok = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(100));
                f(&d.read().unwrap())
            });
            assert!(ok, "{:?}", d.read().unwrap());
        };
        std::fs::write(&p, "room_id,name\nr1,Uno\nr2,Dos\n").unwrap();
        tokio::task::spawn_blocking(move || {
            wait(&|d| d.entries.get("r2").is_some_and(|r| r.name == "Dos"));
            std::fs::write(&p, "room_id,name,oops\nr1,x,y\n").unwrap();
            wait(&|d| d.error.as_deref().is_some_and(|e| e.contains("oops")));
        })
        .await
        .unwrap();
        assert_eq!(d.read().unwrap().entries["r1"].name, "Uno", "the previous directory stays");
        stop.cancel();
    }
}
