//! Configuration keys that were renamed, still read under their old names.
//!
//! A serde alias is not enough: the layers are merged key by key before the result
//! is read, so a file's `batch_interval_ms` and the defaults' `batch_interval` would
//! both reach the section. Each layer a user writes (the file, the environment) has
//! its old keys renamed before the merge.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// (section, old key, new key): the ClickHouse durations, once integers of
/// milliseconds (an integer is still read as milliseconds, see
/// `livefunnel_core::duration::ms_or_unit`).
const RENAMED: &[(&[&str], &str, &str)] = &[
    (&["clickhouse"], "batch_interval_ms", "batch_interval"),
    (&["clickhouse"], "request_timeout_ms", "request_timeout"),
    (&["clickhouse"], "migration_timeout_ms", "migration_timeout"),
    (&["clickhouse", "retry"], "initial_backoff_ms", "initial_backoff"),
    (&["clickhouse", "retry"], "max_backoff_ms", "max_backoff"),
    (&["clickhouse", "retry"], "max_elapsed_ms", "max_elapsed"),
];

/// A layer with its old keys renamed.
pub struct Renamed<P>(pub P);

impl<P: Provider> Provider for Renamed<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            rename(dict).map_err(Error::from)?;
        }
        Ok(data)
    }
}

fn rename(dict: &mut Dict) -> Result<(), String> {
    for &(section, old, new) in RENAMED {
        let Some(d) = section_mut(dict, section) else { continue };
        let Some(value) = d.remove(old) else { continue };
        let dotted = section.join(".");
        if d.contains_key(new) {
            return Err(format!("{dotted}.{old} and {dotted}.{new} are the same key: keep {new} only"));
        }
        d.insert(new.to_owned(), value);
    }
    Ok(())
}

fn section_mut<'a>(dict: &'a mut Dict, path: &[&str]) -> Option<&'a mut Dict> {
    let Some((first, rest)) = path.split_first() else { return Some(dict) };
    match dict.get_mut(*first) {
        Some(Value::Dict(_, inner)) => section_mut(inner, rest),
        _ => None,
    }
}
