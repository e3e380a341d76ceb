//! What a call names and how it is answered: [`Opcode`], [`Method`], [`RetCode`], [`Status`].
//!
//! Wire enums are newtypes with named constants (the rustls `enum_builder!` pattern), so a
//! value this version does not know survives decoding and prints as hex instead of failing.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest method name, in bytes of UTF-8: 255. Longer names are refused by
/// [`bind`](crate::RpcPeer::bind) and by the packet decoder.
pub const MAX_METHOD_NAME_LEN: usize = 255;

/// Builds a `u8`/`u16` newtype with named constants, a name lookup and hex output for
/// values without a name.
macro_rules! wire_newtype {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty), $width:literal {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($value); )*

            /// The constant's name for a value this version knows, else `None`.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($konst)), )*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, concat!("{:#0", $width, "x}"), self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, concat!(stringify!($name), "::{}"), n),
                    None => write!(f, concat!(stringify!($name), "({:#0", $width, "x})"), self.0),
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                Self(v)
            }
        }
    };
}

wire_newtype! {
    /// A numeric method (TCPTalks style). Applications define their own as constants:
    ///
    /// ```
    /// use hail_rpc::Opcode;
    /// const ADD: Opcode = Opcode(1);
    /// assert_eq!(ADD.to_string(), "0x0001"); // no built-in name: printed as hex
    /// assert_eq!(Opcode::PING.to_string(), "PING");
    /// ```
    ///
    /// Opcodes from `0xff00` up ([`Opcode::RESERVED_START`]) are reserved for hail itself.
    Opcode(u16), 6 {
        /// Answered by every peer without a handler: the reply body is the request's
        /// argument bytes, unchanged. A health check and a latency probe.
        PING = 0xff00,
    }
}

impl Opcode {
    /// First opcode reserved for hail; [`bind`](crate::RpcPeer::bind) refuses these.
    pub const RESERVED_START: u16 = 0xff00;

    /// True for opcodes reserved for hail (`0xff00..=0xffff`).
    pub fn is_reserved(self) -> bool {
        self.0 >= Self::RESERVED_START
    }
}

wire_newtype! {
    /// How a call ended, the first field of a reply. Unknown values survive decoding and
    /// reach the caller as [`RpcError::UnknownStatus`](crate::RpcError::UnknownStatus).
    Status(u8), 4 {
        /// The handler ran; the body is its result.
        OK = 0,
        /// No handler is bound to the method; the body is empty.
        UNKNOWN_METHOD = 1,
        /// The arguments did not decode as the handler's argument type; the body is the
        /// decoder's message (a postcard string).
        BAD_ARGUMENTS = 2,
        /// The handler returned an error; the body is its message (a postcard string).
        HANDLER_ERROR = 3,
        /// The handler panicked; the body is empty. The connection lives on.
        HANDLER_PANICKED = 4,
        /// The callee's handler queue was full; the handler did not run. Body empty.
        BUSY = 5,
    }
}

/// The correlation id of one call, chosen by the caller and unique among its calls in
/// flight or kept on that connection (TCPTalks' "retcode").
///
/// Retcodes count up from 1 per connection and wrap at `u32::MAX`, skipping any still in
/// use, so a late reply to a cancelled call is not mistaken for a newer one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RetCode(pub u32);

impl fmt::Display for RetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for RetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetCode({})", self.0)
    }
}

/// A method: a numeric [`Opcode`] (TCPTalks style) or a name (CLOVIS style).
///
/// Both kinds live side by side on one peer. `From` impls let calls name either:
/// `rpc.execute(ADD, ..)` with an opcode, `rpc.execute("greet", ..)` with a name.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// A numeric opcode.
    Opcode(Opcode),
    /// A name: UTF-8, at most [`MAX_METHOD_NAME_LEN`] bytes.
    Name(Cow<'static, str>),
}

impl Method {
    /// The opcode, for an opcode method.
    pub fn opcode(&self) -> Option<Opcode> {
        match self {
            Self::Opcode(op) => Some(*op),
            Self::Name(_) => None,
        }
    }

    /// The name, for a named method.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Opcode(_) => None,
            Self::Name(n) => Some(n),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Opcode(op) => write!(f, "opcode {op}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Opcode(op) => write!(f, "Method::Opcode({op:?})"),
            Self::Name(n) => write!(f, "Method::Name({n:?})"),
        }
    }
}

impl From<Opcode> for Method {
    fn from(op: Opcode) -> Self {
        Self::Opcode(op)
    }
}

impl From<&'static str> for Method {
    fn from(name: &'static str) -> Self {
        Self::Name(Cow::Borrowed(name))
    }
}

impl From<String> for Method {
    fn from(name: String) -> Self {
        Self::Name(Cow::Owned(name))
    }
}

impl From<&Self> for Method {
    fn from(m: &Self) -> Self {
        m.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_print_as_hex() {
        assert_eq!(Opcode(0x2a).to_string(), "0x002a");
        assert_eq!(format!("{:?}", Opcode(0x2a)), "Opcode(0x002a)");
        assert_eq!(format!("{:?}", Opcode::PING), "Opcode::PING");
        assert_eq!(Status(0x7f).to_string(), "0x7f");
        assert_eq!(Status::BUSY.to_string(), "BUSY");
        assert_eq!(format!("{:?}", Status(9)), "Status(0x09)");
        assert_eq!(Status::HANDLER_ERROR.name(), Some("HANDLER_ERROR"));
        assert_eq!(Status(200).name(), None);
    }

    #[test]
    fn reserved_range() {
        assert!(Opcode::PING.is_reserved());
        assert!(Opcode(0xffff).is_reserved());
        assert!(!Opcode(0xfeff).is_reserved());
    }

    #[test]
    fn methods_display_and_compare() {
        let a: Method = "greet".into();
        let b: Method = String::from("greet").into();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "\"greet\"");
        assert_eq!(Method::from(Opcode(7)).to_string(), "opcode 0x0007");
        assert_eq!(Method::from(Opcode(7)).opcode(), Some(Opcode(7)));
        assert_eq!(a.name(), Some("greet"));
        assert_eq!(RetCode(5).to_string(), "#5");
    }
}
