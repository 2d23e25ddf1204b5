//! Names of the host sockets the NAT device asks its shell for: one [`FlowId`] per flow
//! and per DNS query attempt, drawn from one counter so each names one socket.

/// Names a flow and its host socket; never reused. A DNS query's socket has one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// Hands out [`FlowId`]s, from 1, each once: flows and DNS queries draw from the same
/// ids, so each names one shell socket.
#[derive(Debug)]
pub(crate) struct FlowIds(u64);

impl Default for FlowIds {
    fn default() -> Self {
        FlowIds(1)
    }
}

impl FlowIds {
    pub(crate) fn next(&mut self) -> FlowId {
        let id = FlowId(self.0);
        self.0 += 1;
        id
    }
}
