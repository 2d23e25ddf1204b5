//! Library side of vnet's benchmark tools: the synthetic vhost-user guest
//! (`vnet-vhost-guest`) lives here so its virtqueue code is unit-tested.

pub mod vhost;
