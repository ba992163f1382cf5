//! Test helpers shared by livefunnel's crates: a throwaway local ClickHouse server,
//! current ClickHouse in process through chdb, and free loopback ports.
//!
//! Everything here panics on failure with a message saying what to do: a test that
//! needs a server it cannot start must fail loudly, never pass silently.

mod chdb;
mod chdb_session;
mod clickhouse;

pub use chdb::{Chdb, ChdbAnswer, ChdbRun, ChdbStep, CHDB_PYTHON_ENV, CHDB_VERSION};
pub use chdb_session::ChdbSession;
pub use clickhouse::{ClickHouseServer, LIMITED_PASSWORD, LIMITED_USER, WRITER_PASSWORD, WRITER_USER};

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports handed out by [`free_port`] in this process, so two tests running in
/// parallel never get the same one even though the probe socket is closed again.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that nothing listens on right now and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binding a loopback port for a test");
        let port = listener.local_addr().expect("local address of a bound socket").port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found after 1000 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("a free port can be bound");
        }
    }
}
