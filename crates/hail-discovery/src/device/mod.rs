//! The tokio [`Device`]: the [`PeerTable`](crate::PeerTable) driven over `hail-multicast`
//! (adverts) and `hail-link` (one connection per peer, carrying messages, and `hail-rpc`
//! for questions and user calls).
//!
//! | file | job |
//! |---|---|
//! | `builder.rs` | [`DeviceBuilder`], its defaults, `start` (sockets, key, the driver's task) |
//! | `group_plan.rs` | which discovery groups are joined on which interfaces (the defaults, each where its family is); opening them at start |
//! | `handle.rs` | the [`Device`] handle: accessors, counters, RPC handlers, shutdown |
//! | `messages.rs` | `send` (message frames on the peers' links) and `ask` ([`Targets`]); the built-in `hail/ask` |
//! | `caller.rs` | [`Caller`] and [`caller`]: the proven peer behind a handler's call |
//! | `sender.rs` | [`PeerSender`] ([`Device::to`]): messages to one peer on the link it keeps |
//! | `events.rs` | [`DeviceEvent`], the [`DeviceEvents`] stream, [`DeviceCallbacks`] |
//! | `error.rs` | [`DeviceError`], [`SendError`], [`AskError`], [`RunError`], [`DialError`] |
//! | `shared.rs` | the state the handle, the driver and the handlers share; a link's entry |
//! | `driver.rs` | the task: one loop over every input, running then draining |
//! | `links.rs` | the driver's links: up, frames, closed, closing (one-link duplicates) |
//! | `dial.rs` | dialing every address at once; failures in a row and their reports |
//! | `summary.rs` | rate-limited summary lines of refused input |
//! | `trust.rs` | the known-devices file of trust on first use |
//! | `watch.rs` | following the host's interfaces while running: addresses re-announced, the channel joined anew |
//! | `clock.rs` | the one clock (tokio's), as the table's `std` instants |

mod builder;
mod caller;
mod clock;
mod dial;
mod driver;
mod error;
mod events;
mod group_plan;
mod groups;
mod handle;
mod links;
mod lookup;
mod messages;
mod sender;
mod shared;
mod summary;
mod trust;
mod watch;

pub use builder::{DeviceBuilder, EVENT_CAPACITY, FD_HEADROOM, INTERFACE_CHECK};
pub use caller::{Caller, caller};
pub use error::{AskError, DeviceError, DialError, RunError, SendError};
pub use events::{DeviceCallbacks, DeviceEvent, DeviceEvents, MESSAGE_COST};
pub use group_plan::{DEFAULT_GROUP, DEFAULT_GROUP_V6};
pub use handle::{Device, DeviceStats};
pub use messages::Targets;
pub use sender::PeerSender;
pub use trust::KnownDevicesError;
