//! Rate limits and storm control: the spec of this policy section.

use serde::{Deserialize, Serialize};

/// Rate limits and storm control. Placeholder of the plumbing: the section's work fills it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {}
