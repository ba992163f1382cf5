//! `GET /runbook`: `docs/runbook.md` served by livefunnel itself, so that an alert's
//! annotation links to its section with an absolute URL from the public URL the wall
//! is reached at (`{public_url}/runbook#gpmdrop`), with nothing else to host. The
//! anchors are the ones GitHub gives the same headings, so a link works on both.
//!
//! No data and no token: the runbook is the repository's text, like the pages' scripts.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;

use super::api::with_headers;

const RUNBOOK_MD: &str = include_str!("../../../../docs/runbook.md");

pub async fn page() -> Response {
    static HTML: OnceLock<String> = OnceLock::new();
    let html = HTML.get_or_init(|| render(RUNBOOK_MD)).clone();
    with_headers(StatusCode::OK, "text/html; charset=utf-8", html, false)
}

/// Headings become `<hN id=slug>`; the text between them stays as written, in `<pre>`
/// (readable as it is, no Markdown renderer in the binary).
fn render(md: &str) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>livefunnel runbook</title>\
         <link rel=\"stylesheet\" href=\"/assets/wall.css\"></head><body class=\"runbook\">\n",
    );
    let mut block = String::new();
    let flush = |block: &mut String, out: &mut String| {
        let text = block.trim_matches('\n');
        if !text.is_empty() {
            out.push_str(&format!("<pre>{}</pre>\n", escape(text)));
        }
        block.clear();
    };
    let mut fenced = false;
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if !fenced && (1..=6).contains(&level) && line[level..].starts_with(' ') {
            flush(&mut block, &mut out);
            let text = line[level..].trim();
            out.push_str(&format!("<h{level} id=\"{}\">{}</h{level}>\n", escape(&slug(text)), escape(text)));
        } else {
            block.push_str(line);
            block.push('\n');
        }
    }
    flush(&mut block, &mut out);
    out.push_str("</body></html>\n");
    out
}

/// A heading's anchor as GitHub makes it: lower case, spaces to `-`, punctuation dropped.
pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_has_its_anchor_and_the_text_is_escaped() {
        let html = render(RUNBOOK_MD);
        for alert in ["GPMDrop", "OnlineViewersCliff", "RoomSilent", "LivefunnelInstanceDown"] {
            let anchor = format!("<h2 id=\"{}\">{alert}</h2>", alert.to_lowercase());
            assert!(html.contains(&anchor), "{anchor}");
        }
        assert_eq!(
            slug("Upgrading to contract v1.1 (ClickHouse sort keys)"),
            "upgrading-to-contract-v11-clickhouse-sort-keys"
        );
        let html = render("# T\n\na <b> & \"c\"\n```sh\n# not a heading\n```\n## Next one\nx\n");
        assert!(
            html.contains("<pre>a &lt;b&gt; &amp; &quot;c&quot;\n```sh\n# not a heading\n```</pre>"),
            "{html}"
        );
        assert!(html.contains("<h2 id=\"next-one\">Next one</h2>\n<pre>x</pre>"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }
}
