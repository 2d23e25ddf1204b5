//! Filters (ordered rules per direction, connection tracking): the spec of this policy section.

use serde::{Deserialize, Serialize};

/// Filters (ordered rules per direction, connection tracking). Placeholder of the plumbing: the section's work fills it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSpec {}
