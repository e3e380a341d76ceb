//! One simulated LAN for whole devices in paused time: hail-multicast's in-memory bus for
//! adverts and hail-link's in-memory network for links, hosts at 10.0.0.x.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hail_discovery::{Device, DeviceBuilder, DeviceEvents};
use hail_link::memory::MemoryNetwork;
use hail_multicast::memory::Bus;
use hail_multicast::{Channel, ChannelConfig, Receiver};

/// Host `host`'s address on the LAN: 10.0.0.`host`.
pub(crate) fn ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))
}

pub(crate) struct Lan {
    pub(crate) bus: Bus,
    pub(crate) net: MemoryNetwork,
}

impl Lan {
    pub(crate) fn new() -> Self {
        Self {
            bus: Bus::new(),
            net: MemoryNetwork::new(),
        }
    }

    /// A device named `name` on host `host`, to configure further.
    pub(crate) fn builder(&self, name: &str, host: u8) -> DeviceBuilder {
        Device::builder(name).memory(&self.bus, &self.net, ip(host))
    }

    /// A device named `name` on host `host`, started with the defaults.
    pub(crate) async fn device(&self, name: &str, host: u8) -> (Device, DeviceEvents) {
        self.builder(name, host)
            .start()
            .await
            .expect("device starts")
    }

    /// A raw member of the group at `host`: sends whatever datagrams it likes.
    pub(crate) fn forger(&self, group: SocketAddr, host: u8) -> (Channel, Receiver) {
        let config = ChannelConfig::builder()
            .memory_at(&self.bus, SocketAddr::new(ip(host), 5676))
            .build()
            .expect("valid");
        Channel::bind(group, config).expect("joins the bus")
    }
}
