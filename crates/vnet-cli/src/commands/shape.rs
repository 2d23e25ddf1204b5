//! The rate and impairment flags of `vnet port set` and `vnet net policy`: each flag
//! changes its part of the section as it is and leaves the rest.

use vnet_control::policy::impair::{Distribution, ImpairSpec, Impairment};
use vnet_control::policy::rate::{Bucket, RateSpec};

use crate::cli::{ImpairArgs, ImpairDirection, JitterDistribution, RateArgs};

/// `Some(None)` for a section left empty (removed), else `Some(Some(section))`.
fn kept<T: Default + PartialEq>(section: T) -> Option<Option<T>> {
    Some((section != T::default()).then_some(section))
}

impl RateArgs {
    /// The rate section the flags make of `now`: `None` if no flag is given, `Some(None)`
    /// to remove it.
    pub fn section(&self, now: Option<&RateSpec>) -> Option<Option<RateSpec>> {
        if self.no_rate {
            return Some(None);
        }
        let given = self.rate_in.is_some()
            || self.rate_out.is_some()
            || self.burst.is_some()
            || self.broadcast_limit.is_some()
            || self.multicast_limit.is_some()
            || self.unknown_unicast_limit.is_some();
        if !given {
            return None;
        }
        let mut spec = now.cloned().unwrap_or_default();
        // A rate of 0 removes that bucket; --burst alone changes the buckets there are.
        for (rate, bucket) in [
            (self.rate_in, &mut spec.ingress),
            (self.rate_out, &mut spec.egress),
        ] {
            match rate {
                Some(r) if r.0 == 0 => *bucket = None,
                Some(rate) => {
                    *bucket = Some(Bucket {
                        rate,
                        burst: self.burst,
                    })
                }
                None => {
                    if let (Some(b), Some(burst)) = (bucket.as_mut(), self.burst) {
                        b.burst = Some(burst);
                    }
                }
            }
        }
        // A limit of 0 removes it.
        for (flag, limit) in [
            (self.broadcast_limit, &mut spec.broadcast_pps),
            (self.multicast_limit, &mut spec.multicast_pps),
            (self.unknown_unicast_limit, &mut spec.unknown_unicast_pps),
        ] {
            if let Some(pps) = flag {
                *limit = (pps != 0).then_some(pps);
            }
        }
        kept(spec)
    }
}

impl ImpairArgs {
    /// The impair section the flags make of `now`, changing the `--direction` given:
    /// `None` if no flag is given, `Some(None)` to remove it.
    pub fn section(&self, now: Option<&ImpairSpec>) -> Option<Option<ImpairSpec>> {
        if self.no_impair {
            return Some(None);
        }
        let given = self.delay.is_some()
            || self.jitter.is_some()
            || self.distribution.is_some()
            || self.loss.is_some()
            || self.loss_burst.is_some()
            || self.duplicate.is_some()
            || self.reorder.is_some()
            || self.corrupt.is_some()
            || self.impair_rate.is_some();
        if !given {
            return None;
        }
        let mut spec = now.cloned().unwrap_or_default();
        let (inward, outward) = match self.direction {
            ImpairDirection::In => (true, false),
            ImpairDirection::Out => (false, true),
            ImpairDirection::Both => (true, true),
        };
        for (on, side) in [(inward, &mut spec.ingress), (outward, &mut spec.egress)] {
            if !on {
                continue;
            }
            let mut imp = side.take().unwrap_or_default();
            self.change(&mut imp);
            *side = (imp != Impairment::default()).then_some(imp);
        }
        kept(spec)
    }

    fn change(&self, imp: &mut Impairment) {
        if let Some(t) = self.delay {
            imp.delay = t;
        }
        if let Some(t) = self.jitter {
            imp.jitter = t;
        }
        if let Some(d) = self.distribution {
            imp.distribution = match d {
                JitterDistribution::Uniform => Distribution::Uniform,
                JitterDistribution::Normal => Distribution::Normal,
            };
        }
        // The two loss models exclude each other: setting one clears the other.
        if let Some(p) = self.loss {
            imp.loss = p;
            imp.loss_burst = None;
        }
        if let Some(ge) = &self.loss_burst {
            imp.loss_burst = Some(ge.clone());
            imp.loss = Default::default();
        }
        if let Some(p) = self.duplicate {
            imp.duplicate = p;
        }
        if let Some(p) = self.reorder {
            imp.reorder = p;
        }
        if let Some(p) = self.corrupt {
            imp.corrupt = p;
        }
        if let Some(r) = self.impair_rate {
            imp.rate = (r.0 != 0).then_some(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command, PortCommand};
    use clap::Parser;
    use vnet_control::policy::units::{BitRate, ByteSize, Micros, Ppm};
    use vnet_control::PortPolicy;

    fn patch(args: &[&str], now: &PortPolicy) -> vnet_control::PolicyPatch {
        let mut argv = vec!["vnet", "port", "set", "lab", "3"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Command::Port(PortCommand::Set(set)) = cli.command else {
            panic!("not port set")
        };
        set.policy.patch(now)
    }

    #[test]
    fn rate_flags_change_their_part_and_keep_the_rest() {
        let none = PortPolicy::default();
        let p = patch(&["--rate-out", "10mbit", "--burst", "64k"], &none);
        let rate = p.rate.clone().unwrap().unwrap();
        let out = rate.egress.clone().unwrap();
        assert_eq!(
            (out.rate, out.burst),
            (BitRate(10_000_000), Some(ByteSize(65536)))
        );
        assert_eq!(p.impair, None, "no impairment flag: section untouched");
        let now = PortPolicy {
            rate: Some(rate),
            ..Default::default()
        };
        let p = patch(&["--rate-in", "5mbit", "--broadcast-limit", "100"], &now);
        let rate = p.rate.unwrap().unwrap();
        assert_eq!(rate.egress, now.rate.as_ref().unwrap().egress, "kept");
        assert_eq!(rate.ingress.unwrap().rate, BitRate(5_000_000));
        assert_eq!(rate.broadcast_pps, Some(100));
        assert_eq!(patch(&["--rate-out", "0"], &now).rate, Some(None));
        assert_eq!(patch(&["--no-rate"], &now).rate, Some(None));
        let err = Cli::try_parse_from(["vnet", "port", "set", "l", "1", "--rate-in", "10 mbps"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("say e.g. 10mbit"), "{err}");
    }

    #[test]
    fn impairment_flags_change_the_direction_given() {
        let none = PortPolicy::default();
        let p = patch(
            &["--delay", "50ms", "--jitter", "5ms", "--loss", "20%"],
            &none,
        );
        let imp = p.impair.clone().unwrap().unwrap();
        assert_eq!(imp.ingress, None, "out by default");
        let out = imp.egress.clone().unwrap();
        assert_eq!(
            (out.delay, out.jitter, out.loss),
            (Micros(50_000), Micros(5_000), Ppm(200_000))
        );
        let now = PortPolicy {
            impair: Some(imp),
            ..Default::default()
        };
        let p = patch(&["--loss-burst", "1%,30%", "--direction", "both"], &now);
        let imp = p.impair.unwrap().unwrap();
        let out = imp.egress.unwrap();
        assert_eq!(out.delay, Micros(50_000), "kept");
        assert_eq!(out.loss, Ppm(0), "one loss model at a time");
        assert!(out.loss_burst.is_some() && imp.ingress.unwrap().loss_burst.is_some());
        assert_eq!(patch(&["--no-impair"], &now).impair, Some(None));
        assert_eq!(patch(&["--delay", "0"], &none).impair, Some(None));
    }
}
