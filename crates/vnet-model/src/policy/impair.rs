//! Impairment (delay, jitter, loss, duplication, reordering, corruption): the spec of this policy section.

use serde::{Deserialize, Serialize};

/// Impairment (delay, jitter, loss, duplication, reordering, corruption). Placeholder of the plumbing: the section's work fills it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairSpec {}
