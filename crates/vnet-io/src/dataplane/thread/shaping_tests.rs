//! Rate limits, storm control and impairment in the loop, turn by turn on the
//! harness's virtual clock: held frames come back when their time comes, in order.

use std::time::Duration;

use vnet_model::policy::impair::{ImpairSpec, Impairment};
use vnet_model::policy::rate::{Bucket, RateSpec};
use vnet_model::policy::units::{BitRate, ByteSize, Micros, Ppm};

use super::harness::{frame, mac, Harness, Port, BROADCAST};

const MS: Duration = Duration::from_millis(1);

fn drops(h: &Harness, port: &Port, cause: &str) -> u64 {
    h.info(port).counters.drops.get(cause).copied().unwrap_or(0)
}

fn delivered(port: &Port) -> Vec<u8> {
    port.wire.borrow().delivered.iter().map(|f| f[59]).collect()
}

fn delay_out(ms: u64) -> ImpairSpec {
    ImpairSpec {
        egress: Some(Impairment {
            delay: Micros(ms * 1000),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn delayed_frames_arrive_after_their_delay_in_order_and_the_loop_knows_when() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b) = (h.port(lab), h.port(lab));
    h.shape(&b, None, Some(&delay_out(10)));
    h.send(&a, (0..5).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    assert!(delivered(&b).is_empty());
    assert_eq!(h.held_deadline(), Some(h.now + 10 * MS));
    h.advance(9 * MS);
    h.turn();
    assert!(delivered(&b).is_empty(), "not early");
    h.advance(MS);
    h.turn();
    assert_eq!(delivered(&b), vec![0, 1, 2, 3, 4]);
    assert_eq!(h.held_deadline(), None);
    assert_eq!(h.info(&b).counters.tx_frames, 5);
}

#[test]
fn an_egress_rate_lets_frames_out_as_the_bucket_fills() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b) = (h.port(lab), h.port(lab));
    // 60-byte frames at 480 kbit/s: one per millisecond, a burst of one.
    let rate = RateSpec {
        egress: Some(Bucket {
            rate: BitRate(480_000),
            burst: Some(ByteSize(60)),
        }),
        ..Default::default()
    };
    h.shape(&b, Some(&rate), None);
    h.send(&a, (0..10).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    assert_eq!(delivered(&b), vec![0]);
    for i in 1..10u8 {
        assert_eq!(h.held_deadline(), Some(h.now + MS));
        h.advance(MS);
        h.turn();
        assert_eq!(delivered(&b), (0..=i).collect::<Vec<_>>());
    }
    assert_eq!(h.held_deadline(), None);
    assert_eq!(drops(&h, &b, "held_full"), 0);
}

#[test]
fn a_broadcast_storm_is_cut_to_its_limit_and_counted_once_per_frame() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b, c) = (h.port(lab), h.port(lab), h.port(lab));
    let rate = RateSpec {
        broadcast_pps: Some(5),
        unknown_unicast_pps: Some(2),
        ..Default::default()
    };
    h.shape(&a, Some(&rate), None);
    h.send(&a, (0..20).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    h.turn();
    assert_eq!(delivered(&b), vec![0, 1, 2, 3, 4]);
    assert_eq!(drops(&h, &a, "storm"), 15);
    assert_eq!(h.info(&a).counters.rx_frames, 5);
    // Unknown unicast has its own budget; known unicast none.
    h.send(&a, (20..25).map(|n| frame(mac(9), mac(1), n)));
    h.turn();
    h.turn();
    assert_eq!(delivered(&c), vec![0, 1, 2, 3, 4, 20, 21]);
    h.send(&c, [frame(BROADCAST, mac(3), 99)]);
    h.turn();
    h.send(&a, (30..40).map(|n| frame(mac(3), mac(1), n)));
    h.turn();
    h.turn();
    assert_eq!(delivered(&c).len(), 7 + 10);
    assert_eq!(drops(&h, &a, "storm"), 15 + 3);
    // A second on, another second's worth.
    h.advance(1000 * MS);
    h.send(&a, (0..20).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    h.turn();
    // b had 5 broadcasts, 2 flooded unicasts and c's broadcast.
    assert_eq!(delivered(&b).len(), 5 + 2 + 1 + 5);
}

#[test]
fn policing_and_loss_are_counted_by_cause_and_a_change_releases_what_was_held() {
    let mut h = Harness::new();
    let lab = h.vnet("lab");
    let (a, b) = (h.port(lab), h.port(lab));
    let rate = RateSpec {
        ingress: Some(Bucket {
            rate: BitRate(8_000),
            burst: Some(ByteSize(120)),
        }),
        ..Default::default()
    };
    h.shape(&a, Some(&rate), None);
    h.send(&a, (0..5).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    assert_eq!(delivered(&b), vec![0, 1]);
    assert_eq!(drops(&h, &a, "policed"), 3);
    let all_lost = ImpairSpec {
        ingress: Some(Impairment {
            loss: Ppm::ONE,
            ..Default::default()
        }),
        ..Default::default()
    };
    h.shape(&a, None, Some(&all_lost));
    h.send(&a, (5..10).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    assert_eq!(drops(&h, &a, "loss"), 5);
    assert_eq!(delivered(&b), vec![0, 1]);
    // Frames held for a long delay go on at once when the delay is taken away.
    h.shape(&a, None, None);
    h.shape(&b, None, Some(&delay_out(60_000)));
    h.send(&a, (10..13).map(|n| frame(BROADCAST, mac(1), n)));
    h.turn();
    assert_eq!(delivered(&b), vec![0, 1]);
    h.shape(&b, None, None);
    h.turn();
    assert_eq!(delivered(&b), vec![0, 1, 10, 11, 12]);
    assert_eq!(h.held_deadline(), None);
}
