//! Decode cost per event on typical messages; the input path is budgeted in
//! events per second per core, so the figure that matters is ns/event.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use livefunnel_core::decode;

/// A typical `enter` as producers send it, about 250 bytes.
const ENTER: &str = r#"{"event_id":"9f1c2e7a-4b7d-4e0b-9a51-2c8f3b6d1e04","type":"enter","ts":1718000012345,"room_id":"wxch_room_8812734","session_id":"s_8812734_0610_2000","platform":"wechat_channels","user_id":"u_5f3a9c1e77","source":"private_group","is_follower":false}"#;

/// A typical `order_paid`, with money, product and shipping city.
const ORDER_PAID: &str = r#"{"event_id":"0b6e4d2a-8c1f-4a3e-b7d9-5e2f1a0c9b88","type":"order_paid","ts":1718000098765,"room_id":"wxch_room_8812734","session_id":"s_8812734_0610_2000","org_id":"agency-hz-01","platform":"wechat_channels","user_id":"u_5f3a9c1e77","product_id":"sku_100234","order_id":"ord_20240610_77812","amount_cents":12900,"quantity":2,"buyer_city":"杭州"}"#;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, input) in [("enter", ENTER), ("order_paid", ORDER_PAID)] {
        assert!(decode(input.as_bytes()).is_ok(), "{name} must be valid");
        group.bench_function(format!("{name}_{}b", input.len()), |b| {
            b.iter(|| decode(black_box(input.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
