//! Alertmanager's webhook payload (version 4) in, a WeCom group-robot markdown message
//! out: one message per notification, one block per alert, readable on a phone.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parts of Alertmanager's webhook body the message uses
/// (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub status: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
}

/// WeCom refuses a markdown message over 4,096 bytes.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// The robot's request body: `{"msgtype":"markdown","markdown":{"content":...}}`.
pub fn robot_body(n: &Notification, max_alerts: usize) -> serde_json::Value {
    serde_json::json!({ "msgtype": "markdown", "markdown": { "content": content(n, max_alerts) } })
}

/// The markdown: a title line with the state and the alert name, then each alert (at
/// most `max_alerts`, then how many more), cut to [`MAX_CONTENT_BYTES`].
pub fn content(n: &Notification, max_alerts: usize) -> String {
    let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
    let name = n.common_labels.get("alertname").map_or("alerts", String::as_str);
    let mut out = if n.status == "firing" {
        format!("**<font color=\"warning\">告警 FIRING {firing}</font> {name}**\n")
    } else {
        format!("**<font color=\"info\">恢复 RESOLVED</font> {name}**\n")
    };
    for a in n.alerts.iter().take(max_alerts) {
        let who = match (a.labels.get("org_id"), a.labels.get("room_id")) {
            (Some(org), Some(room)) => format!("{org} / {room}"),
            (_, Some(room)) => room.clone(),
            // Org alerts (the pooled small rooms) have no room: the org is who.
            (Some(org), None) => org.clone(),
            _ => a.labels.get("instance").cloned().unwrap_or_else(|| name.to_owned()),
        };
        let get = |k: &str| a.annotations.get(k).map_or("", String::as_str);
        out.push_str(&format!("> **{who}**{}：{}\n", resolved_mark(a), get("summary")));
        if !get("description").is_empty() {
            out.push_str(&format!("> {}\n", get("description")));
        }
        // Room alerts link to the room's page on the wall (deploy/README.md).
        if !get("room_url").is_empty() {
            out.push_str(&format!("> [直播间大屏 room page]({})\n", get("room_url")));
        }
        if !get("runbook_url").is_empty() {
            out.push_str(&format!("> [处理手册 runbook]({})\n", get("runbook_url")));
        }
    }
    let more = n.alerts.len().saturating_sub(max_alerts) as u64 + n.truncated_alerts;
    if more > 0 {
        out.push_str(&format!("…… 另有 {more} 条 ({more} more)\n"));
    }
    cut(out, MAX_CONTENT_BYTES)
}

fn resolved_mark(a: &Alert) -> &'static str {
    if a.status == "resolved" {
        " (已恢复 resolved)"
    } else {
        ""
    }
}

/// `s` cut to at most `max` bytes at a character boundary, ending in `…` when cut.
fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alerts: usize, status: &str) -> Notification {
        let alerts: Vec<serde_json::Value> = (0..alerts)
            .map(|i| {
                serde_json::json!({
                    "status": status,
                    "labels": {"alertname": "GPMDrop", "org_id": "org-a", "room_id": format!("room-{i}"), "severity": "warning"},
                    "annotations": {"summary": "GPM down 60 %", "description": "room \"x\" line\nbreak", "runbook_url": "https://wall/runbook#gpmdrop", "room_url": format!("https://wall/rooms/room-{i}")},
                    "startsAt": "2026-12-05T01:02:03Z",
                })
            })
            .collect();
        let body = serde_json::json!({
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "robot-default",
            "groupLabels": {"org_id": "org-a"}, "commonLabels": {"alertname": "GPMDrop"},
            "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts,
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_notification_becomes_one_robot_markdown_message() {
        let body = robot_body(&payload(2, "firing"), 20);
        assert_eq!(body["msgtype"], "markdown");
        let text = serde_json::to_string(&body).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        let c = back["markdown"]["content"].as_str().unwrap();
        assert!(c.starts_with("**<font color=\"warning\">告警 FIRING 2</font> GPMDrop**\n"), "{c}");
        assert!(c.contains("> **org-a / room-1**：GPM down 60 %\n"), "{c}");
        assert!(c.contains("room \"x\" line\nbreak"), "quotes and newlines survive as JSON: {c}");
        assert!(c.contains("[处理手册 runbook](https://wall/runbook#gpmdrop)"), "{c}");
        assert!(c.contains("[直播间大屏 room page](https://wall/rooms/room-1)"), "{c}");
        let resolved = content(&payload(1, "resolved"), 20);
        assert!(
            resolved.starts_with("**<font color=\"info\">恢复 RESOLVED</font> GPMDrop**")
                && resolved.contains("已恢复")
        );
    }

    #[test]
    fn an_org_alert_names_its_org() {
        let mut n = payload(1, "firing");
        n.alerts[0].labels.remove("room_id");
        n.alerts[0].labels.insert("alertname".into(), "OrgOrdersStall".into());
        n.alerts[0].labels.insert("instance".into(), "livefunnel:9464".into());
        let c = content(&n, 20);
        assert!(c.contains("> **org-a**：GPM down 60 %\n"), "{c}");
    }

    #[test]
    fn many_alerts_are_listed_up_to_the_limit_and_the_message_fits_wecom() {
        let c = content(&payload(5, "firing"), 3);
        assert!(c.contains("room-2") && !c.contains("room-3") && c.contains("另有 2 条"), "{c}");
        let huge = content(&payload(200, "firing"), 200);
        assert!(huge.len() <= MAX_CONTENT_BYTES && huge.ends_with('…'), "{}", huge.len());
    }
}
