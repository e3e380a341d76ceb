//! How a device lists the host's interfaces: the [`Lookup`] its start and its interface
//! watch read (the host's listing, or a test's), and the [`Listing`] a start makes once.

use std::sync::Arc;

use hail_multicast::{InterfaceInfo, MulticastError};

/// Where a device reads the host's interfaces, at its start and in its interface watch:
/// [`hail_multicast::interfaces`], or a test's listing.
#[derive(Clone)]
pub(super) struct Lookup(
    Arc<dyn Fn() -> Result<Vec<InterfaceInfo>, MulticastError> + Send + Sync + 'static>,
);

impl Lookup {
    /// The host's interfaces, as the operating system lists them.
    pub(super) fn host() -> Self {
        Self(Arc::new(hail_multicast::interfaces))
    }

    /// A listing from `f` (a test's).
    #[cfg(test)]
    pub(super) fn from_fn(
        f: impl Fn() -> Result<Vec<InterfaceInfo>, MulticastError> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// The interfaces now.
    pub(super) fn list(&self) -> Result<Vec<InterfaceInfo>, MulticastError> {
        (self.0)()
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup")
    }
}

/// The host's interfaces, listed at most once for a device's start: the group plan, the
/// channels and the advertised addresses read one listing (each costs a few netlink
/// round trips: 50 to 150 us on the test machine, most of a device's start). Listed by
/// the device's [`Lookup`], the one its interface watch reads later, so that the watch
/// compares like with like (and a test's listing stands in for the host's at start too).
#[derive(Debug)]
pub(super) struct Listing {
    lookup: Lookup,
    listed: Option<Vec<InterfaceInfo>>,
}

impl Listing {
    /// Nothing listed yet; the first [`get`](Self::get) asks `lookup`.
    pub(super) fn new(lookup: Lookup) -> Self {
        Self {
            lookup,
            listed: None,
        }
    }

    /// The listing, made on first use.
    pub(super) fn get(&mut self) -> Result<&[InterfaceInfo], MulticastError> {
        if self.listed.is_none() {
            self.listed = Some(self.lookup.list()?);
        }
        Ok(self.listed.as_deref().unwrap_or_default())
    }
}
