//! 802.1Q port modes and the ingress/egress rules that follow from them.

use serde::{Deserialize, Serialize};

use crate::wire::VlanTag;

use super::DropCause;

/// The VLAN every port belongs to unless configured otherwise (IEEE default PVID).
pub const DEFAULT_VLAN: u16 = 1;
/// VLAN 4095 is reserved by 802.1Q and never forwarded.
pub const RESERVED_VLAN: u16 = 4095;

/// Whether `vid` can name a VLAN (1–4094).
pub fn is_valid_vid(vid: u16) -> bool {
    (1..RESERVED_VLAN).contains(&vid)
}

/// A set of VLAN ids, one bit each (512 bytes, O(1) membership).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    pub fn new() -> Self {
        VlanSet([0; 64])
    }
    pub fn insert(&mut self, vid: u16) {
        self.0[usize::from(vid >> 6) & 63] |= 1 << (vid & 63);
    }
    pub fn contains(&self, vid: u16) -> bool {
        self.0[usize::from(vid >> 6) & 63] & (1 << (vid & 63)) != 0
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..4096u16).filter(|v| self.contains(*v))
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// How a port takes part in VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum VlanMode {
    /// One VLAN, untagged on the wire. Tagged frames (other than priority tags) are dropped.
    Access { vlan: u16 },
    /// Several VLANs, tagged on the wire; `native` is carried untagged.
    Trunk {
        allowed: Vec<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        native: Option<u16>,
    },
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Access { vlan: DEFAULT_VLAN }
    }
}

/// A [`VlanMode`] compiled for the hot path.
#[derive(Debug, Clone)]
pub(crate) enum VlanRule {
    Access(u16),
    Trunk {
        allowed: Box<VlanSet>,
        native: Option<u16>,
    },
}

/// The configuration named a VLAN id outside 1–4094.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VLAN id {0} is out of range: use 1-4094")]
pub struct InvalidVlan(pub u16);

impl VlanRule {
    pub(crate) fn compile(mode: &VlanMode) -> Result<Self, InvalidVlan> {
        let check = |v: u16| {
            if is_valid_vid(v) {
                Ok(v)
            } else {
                Err(InvalidVlan(v))
            }
        };
        Ok(match mode {
            VlanMode::Access { vlan } => VlanRule::Access(check(*vlan)?),
            VlanMode::Trunk { allowed, native } => {
                let mut set = VlanSet::new();
                for v in allowed {
                    set.insert(check(*v)?);
                }
                if let Some(n) = native {
                    set.insert(check(*n)?);
                }
                VlanRule::Trunk {
                    allowed: Box::new(set),
                    native: *native,
                }
            }
        })
    }

    /// The VLAN a frame arriving on this port belongs to.
    pub(crate) fn classify(&self, tag: Option<VlanTag>) -> Result<u16, DropCause> {
        let vid = tag.map(|t| t.vid).filter(|v| *v != 0);
        match (self, vid) {
            (_, Some(RESERVED_VLAN)) => Err(DropCause::BadTag),
            (VlanRule::Access(v), None) => Ok(*v),
            (VlanRule::Access(_), Some(_)) => Err(DropCause::VlanDenied),
            (VlanRule::Trunk { native, .. }, None) => native.ok_or(DropCause::VlanDenied),
            (VlanRule::Trunk { allowed, .. }, Some(v)) if allowed.contains(v) => Ok(v),
            (VlanRule::Trunk { .. }, Some(_)) => Err(DropCause::VlanDenied),
        }
    }

    /// How a frame of `vlan` leaves this port, or `None` if the port is not a member.
    pub(crate) fn egress(&self, vlan: u16) -> Option<Tagging> {
        match self {
            VlanRule::Access(v) => (*v == vlan).then_some(Tagging::Untagged),
            VlanRule::Trunk { native, .. } if *native == Some(vlan) => Some(Tagging::Untagged),
            VlanRule::Trunk { allowed, .. } => {
                allowed.contains(vlan).then_some(Tagging::Tagged(vlan))
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_member(&self, vlan: u16) -> bool {
        self.egress(vlan).is_some()
    }
}

/// What the egress port needs done to a frame's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagging {
    Untagged,
    Tagged(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(vid: u16) -> Option<VlanTag> {
        Some(VlanTag {
            pcp: 0,
            dei: false,
            vid,
        })
    }

    #[test]
    fn access_port_rules() {
        let r = VlanRule::compile(&VlanMode::Access { vlan: 10 }).unwrap();
        assert_eq!(r.classify(None), Ok(10));
        assert_eq!(
            r.classify(tag(0)),
            Ok(10),
            "priority tag counts as untagged"
        );
        assert_eq!(r.classify(tag(10)), Err(DropCause::VlanDenied));
        assert_eq!(r.classify(tag(4095)), Err(DropCause::BadTag));
        assert_eq!(r.egress(10), Some(Tagging::Untagged));
        assert_eq!(r.egress(11), None);
    }

    #[test]
    fn trunk_port_rules() {
        let mode = VlanMode::Trunk {
            allowed: vec![10, 20],
            native: Some(1),
        };
        let r = VlanRule::compile(&mode).unwrap();
        assert_eq!(r.classify(None), Ok(1));
        assert_eq!(r.classify(tag(20)), Ok(20));
        assert_eq!(r.classify(tag(30)), Err(DropCause::VlanDenied));
        assert_eq!(r.egress(1), Some(Tagging::Untagged));
        assert_eq!(r.egress(10), Some(Tagging::Tagged(10)));
        assert_eq!(r.egress(30), None);
        let no_native = VlanRule::compile(&VlanMode::Trunk {
            allowed: vec![10],
            native: None,
        })
        .unwrap();
        assert_eq!(no_native.classify(None), Err(DropCause::VlanDenied));
    }

    #[test]
    fn rejects_invalid_ids() {
        assert_eq!(
            VlanRule::compile(&VlanMode::Access { vlan: 0 }).unwrap_err(),
            InvalidVlan(0)
        );
        assert!(VlanRule::compile(&VlanMode::Trunk {
            allowed: vec![4095],
            native: None
        })
        .is_err());
    }

    #[test]
    fn vlan_set_membership() {
        let mut s = VlanSet::new();
        for v in [1, 63, 64, 4094] {
            s.insert(v);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 63, 64, 4094]);
        assert!(!s.contains(2));
    }
}
