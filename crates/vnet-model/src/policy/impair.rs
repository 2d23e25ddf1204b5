//! Impairment of a port (issue 15, item 6): netem / VDE wirefilter inside the switch.
//!
//! ```toml
//! [network.policy.impair.out]                # toward the port's client
//! delay = "50ms"
//! jitter = "5ms"
//! distribution = "normal"
//! loss = "1%"
//! duplicate = "0.5%"
//! reorder = "10%"
//! corrupt = "0.1%"
//! rate = "1mbit"
//!
//! [network.policy.impair.in]                 # from it
//! loss_burst = { p = "1%", r = "30%" }       # Gilbert–Elliott, as netem's gemodel
//! ```

use serde::{Deserialize, Serialize};

use super::units::{BitRate, Micros, Ppm};

/// Impairment per direction of one port (or a vnet's default for its client ports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairSpec {
    /// Frames from the port's client into the vnet.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Impairment>,
    /// Frames from the vnet to the port's client.
    #[serde(default, rename = "out", skip_serializing_if = "Option::is_none")]
    pub egress: Option<Impairment>,
}

/// What happens to the frames of one direction, in netem's order: lost, duplicated,
/// corrupted, then held for the delay (and the `rate`'s serialization time), unless
/// picked for reordering, which sends a frame at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    #[serde(default, skip_serializing_if = "is_zero_us")]
    pub delay: Micros,
    /// Added to the delay: uniform in ±jitter, or normal with σ = jitter (cut at 4σ).
    /// Jitter never reorders frames: a frame is not released before the one ahead.
    #[serde(default, skip_serializing_if = "is_zero_us")]
    pub jitter: Micros,
    #[serde(default, skip_serializing_if = "Distribution::is_uniform")]
    pub distribution: Distribution,
    /// Frames lost at random, each with this probability.
    #[serde(default, skip_serializing_if = "is_zero_ppm")]
    pub loss: Ppm,
    /// Frames lost in bursts (instead of `loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_burst: Option<GilbertElliott>,
    /// Frames sent twice.
    #[serde(default, skip_serializing_if = "is_zero_ppm")]
    pub duplicate: Ppm,
    /// Frames sent at once, ahead of the delayed ones (needs a delay).
    #[serde(default, skip_serializing_if = "is_zero_ppm")]
    pub reorder: Ppm,
    /// Frames with one bit flipped after the Ethernet header (checksums left wrong).
    #[serde(default, skip_serializing_if = "is_zero_ppm")]
    pub corrupt: Ppm,
    /// A link of this speed: each frame waits its serialization time behind the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<BitRate>,
}

/// The jitter's distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
}

impl Distribution {
    fn is_uniform(&self) -> bool {
        *self == Distribution::Uniform
    }
}

/// Gilbert–Elliott loss, netem's `loss gemodel p r 1-h 1-k`: a good and a bad state,
/// `p` the chance to go bad per frame, `r` to recover; frames are lost with
/// `bad_loss` (1-h) in the bad state and `good_loss` (1-k) in the good one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliott {
    pub p: Ppm,
    pub r: Ppm,
    #[serde(default = "all", skip_serializing_if = "is_all")]
    pub bad_loss: Ppm,
    #[serde(default, skip_serializing_if = "is_zero_ppm")]
    pub good_loss: Ppm,
}

impl std::str::FromStr for GilbertElliott {
    type Err = String;
    /// `P,R[,1-H[,1-K]]` as the CLI takes it: `"1%,30%"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts = s
            .split(',')
            .map(|p| p.parse::<Ppm>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        match parts[..] {
            [p, r] => Ok(GilbertElliott { p, r, bad_loss: Ppm::ONE, good_loss: Ppm(0) }),
            [p, r, bad_loss] => Ok(GilbertElliott { p, r, bad_loss, good_loss: Ppm(0) }),
            [p, r, bad_loss, good_loss] => Ok(GilbertElliott { p, r, bad_loss, good_loss }),
            _ => Err(format!(
                "loss burst {s:?}: say P,R[,1-H[,1-K]], e.g. 1%,30% (go bad, recover, loss when bad, loss when good)"
            )),
        }
    }
}

fn all() -> Ppm {
    Ppm::ONE
}
fn is_all(p: &Ppm) -> bool {
    *p == Ppm::ONE
}
fn is_zero_ppm(p: &Ppm) -> bool {
    p.0 == 0
}
fn is_zero_us(t: &Micros) -> bool {
    t.0 == 0
}

/// What a port's impairment holds now and did (`PortInfo.policy`); lost frames are
/// counted as the port's `loss` drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairReport {
    /// Frames held for their delay, both directions.
    pub held_frames: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    /// Frames sent ahead of the delayed ones.
    pub reordered: u64,
}

/// Longest delay or jitter: held frames must come back while anyone still cares.
pub const MAX_DELAY: Micros = Micros(60_000_000);

impl ImpairSpec {
    pub fn is_empty(&self) -> bool {
        *self == ImpairSpec::default()
    }

    /// Checks values the data plane cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        for (name, imp) in [("in", &self.ingress), ("out", &self.egress)] {
            let Some(imp) = imp else { continue };
            if imp.delay > MAX_DELAY || imp.jitter > MAX_DELAY {
                return Err(format!(
                    "impair {name}: delay and jitter go up to {MAX_DELAY}"
                ));
            }
            if imp.loss.0 != 0 && imp.loss_burst.is_some() {
                return Err(format!(
                    "impair {name}: loss and loss_burst are two models of loss; pick one"
                ));
            }
            if imp.reorder.0 != 0 && imp.delay.0 == 0 {
                return Err(format!(
                    "impair {name}: reorder sends some frames ahead of delayed ones; it needs a delay"
                ));
            }
            if imp.rate == Some(BitRate(0)) {
                return Err(format!("impair {name}: a rate of 0 passes nothing"));
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
        let json = r#"{"out":{"delay":"50ms","jitter":"5ms","distribution":"normal","loss":"20%","reorder":"10%","rate":"1mbit"},"in":{"loss_burst":{"p":"1%","r":"30%"}}}"#;
        let spec: ImpairSpec = serde_json::from_str(json).unwrap();
        let out = spec.egress.as_ref().unwrap();
        assert_eq!(out.delay, Micros(50_000));
        assert_eq!(out.distribution, Distribution::Normal);
        assert_eq!(out.loss, Ppm(200_000));
        let ge = spec.ingress.as_ref().unwrap().loss_burst.as_ref().unwrap();
        assert_eq!(ge.bad_loss, Ppm::ONE);
        assert_eq!(ge, &"1%,30%".parse().unwrap());
        assert!(spec.validate().is_ok());
        let back: ImpairSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert!("1%".parse::<GilbertElliott>().is_err());
        assert!("1%,2%,3%,4%,5%".parse::<GilbertElliott>().is_err());
    }

    #[test]
    fn refuses_what_cannot_be_honoured() {
        let reorder: ImpairSpec = serde_json::from_str(r#"{"in":{"reorder":"5%"}}"#).unwrap();
        assert!(reorder.validate().unwrap_err().contains("needs a delay"));
        let both: ImpairSpec =
            serde_json::from_str(r#"{"out":{"loss":"5%","loss_burst":{"p":"1%","r":"2%"}}}"#)
                .unwrap();
        assert!(both.validate().unwrap_err().contains("pick one"));
        let long: ImpairSpec = serde_json::from_str(r#"{"out":{"delay":"61s"}}"#).unwrap();
        assert!(long.validate().is_err());
    }
}
