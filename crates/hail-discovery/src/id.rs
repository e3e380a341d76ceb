//! Identifiers: devices, connections and dial attempts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A random 16-byte identifier a device picks at every start (one per incarnation).
///
/// Names are chosen by people and may collide; ids are random and tell incarnations apart:
/// a device that restarts under the same name comes back with a new id. Ids are ordered
/// as 16 bytes compared lexicographically; who of two devices dials first (and whose dial
/// the one-link rule of the [`PeerTable`](crate::PeerTable) keeps) depends on that order
/// and on how many bits the two ids differ in.
///
/// On the wire an id is its 16 bytes, as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// A fresh id from the operating system's random source (through `rand`'s thread RNG).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The 16 bytes of the id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Which of two devices dials the other first (the other waits
    /// [`dial_yield`](crate::PeerTableConfigBuilder::dial_yield) for that dial), and whose
    /// dial the one-link rule keeps: the smaller id when the two ids differ in an even
    /// number of bits, the larger when they differ in an odd number.
    ///
    /// Symmetric (both ends of a pair agree without a word), and balanced: for random ids,
    /// each device is the first dialer for about half of its peers, whatever its rank,
    /// where "the smaller dials" made the smallest id of a mesh dial every other device
    /// and the largest none. `a == b` gives that id.
    pub(crate) fn dials_first(a: Self, b: Self) -> Self {
        let differing = a.0.iter().zip(&b.0).map(|(x, y)| (x ^ y).count_ones());
        let (smaller, larger) = if a <= b { (a, b) } else { (b, a) };
        if differing.sum::<u32>().is_multiple_of(2) {
            smaller
        } else {
            larger
        }
    }
}

impl fmt::Display for DeviceId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// A connection handle, chosen by whoever owns the sockets (the driver of the
/// [`PeerTable`](crate::PeerTable)); it must be unique among the connections that are open
/// at the same time, and should not be reused soon after a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A dial attempt requested by the [`PeerTable`](crate::PeerTable) in
/// [`Action::Dial`](crate::Action::Dial); the driver reports its outcome with this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialId(pub(crate) u64);

impl DialId {
    /// The number behind the id (unique within one peer table).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dial#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_hex_and_order_is_bytewise() {
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[15] = 0x01;
        let id = DeviceId::from_bytes(b);
        assert_eq!(id.to_string(), "ab000000000000000000000000000001");
        assert_eq!(
            format!("{id:?}"),
            "DeviceId(ab000000000000000000000000000001)"
        );
        let mut c = [0u8; 16];
        c[0] = 0xac;
        assert!(id < DeviceId::from_bytes(c));
        assert_ne!(DeviceId::random(), DeviceId::random());
    }
}
