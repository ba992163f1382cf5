//! Starts a throwaway local ClickHouse server (the one the tests use: own config, data
//! directory and free loopback ports), prints `URL PID` on one line, and keeps it
//! running until standard input closes. Then the server is killed and its directory
//! removed. `scripts/bench-pipeline.sh` runs benchmarks against it.

use std::io::{Read, Write};

use livefunnel_testkit::ClickHouseServer;

fn main() {
    let server = ClickHouseServer::spawn();
    let pid = server.pid().expect("a spawned server has a process");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{} {pid}", server.http_url()).expect("writing to stdout");
    stdout.flush().expect("flushing stdout");
    // Blocks until the parent closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
}
