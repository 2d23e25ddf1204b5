//! Rate limits and storm control of a port (issue 15, item 5).
//!
//! ```toml
//! [network.policy.rate]
//! out = { rate = "10mbit", burst = "64k" }   # toward the port's client: shaped
//! in = { rate = "10mbit" }                   # from it: policed
//! broadcast_pps = 100
//! multicast_pps = 1000
//! unknown_unicast_pps = 100
//! ```

use serde::{Deserialize, Serialize};

use super::units::{BitRate, ByteSize};

/// Rate limits and storm control of one port (or a vnet's default for its client
/// ports). Every part is optional; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Frames from the port's client into the vnet: over the rate they are dropped
    /// (`policed`).
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Bucket>,
    /// Frames from the vnet to the port's client: over the rate they wait in the
    /// port's held queue (shaped) and are dropped only when it is full (`held_full`).
    #[serde(default, rename = "out", skip_serializing_if = "Option::is_none")]
    pub egress: Option<Bucket>,
    /// Broadcast frames per second the port may send (over it: `storm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_pps: Option<u64>,
    /// Multicast (not broadcast) frames per second the port may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_pps: Option<u64>,
    /// Frames per second to unicast addresses the vnet does not know (flooded) the port
    /// may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_unicast_pps: Option<u64>,
}

/// A token bucket: `rate` on average, `burst` bytes at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub rate: BitRate,
    /// Bytes that may pass at once after a quiet spell; absent: [`Bucket::default_burst`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<ByteSize>,
}

impl Bucket {
    /// 20 ms at the rate, at least 256 KiB: a few GSO super-frames, so TCP through a
    /// policer keeps its rate (with 64 KiB it got a quarter of 10 Mbit/s).
    pub fn default_burst(rate: BitRate) -> ByteSize {
        ByteSize((rate.0 / 8 / 50).max(256 * 1024))
    }

    /// The burst in effect.
    pub fn burst_bytes(&self) -> u64 {
        self.burst.unwrap_or(Self::default_burst(self.rate)).0
    }
}

/// What a port's shaper holds now (`PortInfo.policy`); its drops are counted by cause
/// with the port's (`policed`, `storm`, `held_full`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateReport {
    /// Frames waiting for the egress rate.
    pub held_frames: u64,
    pub held_bytes: u64,
}

impl RateSpec {
    /// Whether the spec limits anything.
    pub fn is_empty(&self) -> bool {
        *self == RateSpec::default()
    }

    /// Checks values the data plane cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        for (name, bucket) in [("in", &self.ingress), ("out", &self.egress)] {
            if let Some(b) = bucket {
                if b.rate.0 == 0 {
                    return Err(format!(
                        "rate {name}: a rate of 0 passes nothing; leave it out to remove the limit"
                    ));
                }
            }
        }
        for (name, pps) in [
            ("broadcast_pps", self.broadcast_pps),
            ("multicast_pps", self.multicast_pps),
            ("unknown_unicast_pps", self.unknown_unicast_pps),
        ] {
            if pps == Some(0) {
                return Err(format!(
                    "{name}: 0 frames per second passes nothing; leave it out to remove the limit"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_documented_form() {
        let json =
            r#"{"in":{"rate":"10mbit"},"out":{"rate":"1gbit","burst":"64k"},"broadcast_pps":100}"#;
        let spec: RateSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.ingress.as_ref().unwrap().rate, BitRate(10_000_000));
        assert_eq!(spec.ingress.as_ref().unwrap().burst_bytes(), 256 * 1024);
        assert_eq!(spec.egress.as_ref().unwrap().burst_bytes(), 65536);
        assert_eq!(
            Bucket::default_burst(BitRate(1_000_000_000)),
            ByteSize(2_500_000)
        );
        assert_eq!(spec.broadcast_pps, Some(100));
        assert_eq!(serde_json::to_string(&spec).unwrap(), json);
        assert!(spec.validate().is_ok());
        let err = serde_json::from_str::<RateSpec>(r#"{"in":{"rate":"10 mbps"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("say e.g. 10mbit"), "{err}");
        assert!(serde_json::from_str::<RateSpec>(r#"{"inn":{}}"#).is_err());
        let zero: RateSpec = serde_json::from_str(r#"{"multicast_pps":0}"#).unwrap();
        assert!(zero.validate().unwrap_err().contains("multicast_pps"));
    }
}
