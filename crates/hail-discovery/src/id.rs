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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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

    fn random_ids(rng: &mut StdRng, n: usize) -> Vec<DeviceId> {
        (0..n).map(|_| DeviceId::from_bytes(rng.random())).collect()
    }

    #[test]
    fn dials_first_is_symmetric_and_names_one_of_the_two() {
        let mut rng = StdRng::seed_from_u64(1);
        let ids = random_ids(&mut rng, 40);
        for &a in &ids {
            assert_eq!(DeviceId::dials_first(a, a), a);
            for &b in &ids {
                let first = DeviceId::dials_first(a, b);
                assert!(first == a || first == b, "{a} {b}");
                assert_eq!(first, DeviceId::dials_first(b, a), "{a} {b}");
            }
        }
        // Both cases of the rule: ids one bit apart (odd), two bits apart (even).
        let small = DeviceId::from_bytes([0; 16]);
        let mut one = [0; 16];
        one[15] = 1;
        let mut two = [0; 16];
        two[15] = 3;
        let (one, two) = (DeviceId::from_bytes(one), DeviceId::from_bytes(two));
        assert_eq!(DeviceId::dials_first(small, one), one, "odd: the larger");
        assert_eq!(
            DeviceId::dials_first(two, small),
            small,
            "even: the smaller"
        );
    }

    /// In a mesh of 50 random ids each device is the first dialer for about half of its 49
    /// peers, whatever its rank (with "the smaller dials" the smallest id had 49, the
    /// largest none). Given a device's id, whether it dials first to another random id is a
    /// fair coin: flipping the other id's last bit flips the parity of the bits they differ
    /// in and keeps its order against the device's id (but for a 2^-127 chance), so it
    /// flips the outcome. The other ids are independent, so a device's count is
    /// Binomial(49, 1/2): mean 24.5, standard deviation 3.5. P(count <= 4) = P(count >=
    /// 45) = 4.1e-10, so the bound 5..=44 (24.5 +- 19.5) fails for some device of 20
    /// meshes of 50 with probability at most 2 * 20 * 50 * 4.1e-10 < 1e-6, whatever the
    /// seed. The old rule fails it in every mesh (counts 0 to 49).
    #[test]
    fn each_device_dials_first_to_about_half_of_its_peers() {
        let mut rng = StdRng::seed_from_u64(50);
        for _ in 0..20 {
            let ids = random_ids(&mut rng, 50);
            let mut total = 0;
            for &a in &ids {
                let count = ids
                    .iter()
                    .filter(|&&b| b != a && DeviceId::dials_first(a, b) == a)
                    .count();
                assert!(
                    (5..=44).contains(&count),
                    "{a} dials first to {count} of 49"
                );
                total += count;
            }
            assert_eq!(total, 50 * 49 / 2, "one first dialer per pair");
        }
    }
}
