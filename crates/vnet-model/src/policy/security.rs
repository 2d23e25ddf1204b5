//! Port security (MAC lock, IP source guard, DHCP server and RA guards): the spec of this policy section.

use serde::{Deserialize, Serialize};

/// Port security (MAC lock, IP source guard, DHCP server and RA guards). Placeholder of the plumbing: the section's work fills it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {}
