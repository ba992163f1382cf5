//! Errors as one line for people: the workspace's crates keep causes as `source`, and
//! a log line or the process's last line shows them all.

/// An error and its sources, outermost first, joined by ": " (as `anyhow` prints
/// `{:#}`), leaving out a source whose text the message so far already holds (an
/// error that prints its source and also returns it).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("saving {0}")]
    struct Outer(&'static str, #[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = Outer("t-3.ckpt", Middle(io));
        // `Middle` prints its source and returns it too.
        assert_eq!(super::chain(&e), "saving t-3.ckpt: cannot write: permission denied");
    }
}
