//! DHCPv4 messages (RFC 2131, options of RFC 2132): the fixed BOOTP header followed by the
//! magic cookie and type-length-value options.
//!
//! ```text
//!   0 op | htype | hlen | hops      4 xid        8 secs | flags
//!  12 ciaddr   16 yiaddr   20 siaddr   24 giaddr   28 chaddr[16]
//!  44 sname[64]   108 file[128]   236 magic 99.130.83.99   240 options ... 255
//! ```
//!
//! Only what a client needs: [`Message::encode`] writes a request padded to the full 548-byte
//! BOOTP layout (QEMU's slirp ignores shorter ones), [`Message::decode`] reads any message and
//! never panics on malformed input. Option overloading into `sname`/`file` (option 52) is not
//! followed: servers use it only when the options do not fit, which a lease never needs.
//!
//! The `dhcproto` crate was tried first and dropped: its decoder panics on malformed replies
//! (`hlen` above 16, and debug assertions on option lengths), and it would have added 300 KB
//! (a DNS library, URL and IDNA tables) to the static binary. Its encoder and decoder remain
//! the independent reference of this module's tests.

use std::net::Ipv4Addr;

/// The port servers listen on.
pub const SERVER_PORT: u16 = 67;
/// The port clients listen on.
pub const CLIENT_PORT: u16 = 68;
/// `op` of a request.
pub const BOOTREQUEST: u8 = 1;
/// `op` of a reply.
pub const BOOTREPLY: u8 = 2;
/// The BROADCAST bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes used here.
pub mod option {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers, in order of preference.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// The client's host name.
    pub const HOSTNAME: u8 = 12;
    /// The address a client asks for.
    pub const REQUESTED_ADDRESS: u8 = 50;
    /// Lease time in seconds.
    pub const LEASE_TIME: u8 = 51;
    /// The message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// The server's identifier (its address).
    pub const SERVER_ID: u8 = 54;
    /// The options a client asks for.
    pub const PARAMETER_LIST: u8 = 55;
    /// Largest message the client accepts.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// The client's identifier.
    pub const CLIENT_ID: u8 = 61;
}

const PAD: u8 = 0;
const END: u8 = 255;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPTIONS_AT: usize = 240;
/// The full BOOTP layout: 236 header bytes, the cookie and 308 option bytes.
pub const MIN_MESSAGE: usize = 548;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A client looks for servers.
    Discover = 1,
    /// A server offers an address.
    Offer = 2,
    /// A client asks for the offered address.
    Request = 3,
    /// A client refuses an address.
    Decline = 4,
    /// A server grants the address.
    Ack = 5,
    /// A server refuses the request.
    Nak = 6,
    /// A client gives its address back.
    Release = 7,
    /// A client asks for settings only.
    Inform = 8,
}

impl MessageType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// Why bytes are not a DHCP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the BOOTP header and cookie.
    #[error("DHCP message of {0} bytes is shorter than the 240-byte header")]
    Truncated(usize),
    /// The magic cookie is wrong (a plain BOOTP message, or garbage).
    #[error("no DHCP magic cookie")]
    NoCookie,
    /// `hlen` is larger than `chaddr`.
    #[error("hardware address length {0} is over 16")]
    HardwareLength(u8),
    /// An option runs past the end of the message.
    #[error("option {code} at byte {offset} runs past the end")]
    OptionCut {
        /// The option's code.
        code: u8,
        /// Where it starts.
        offset: usize,
    },
}

/// A DHCP message; options keep their order and raw values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// [`BOOTREQUEST`] or [`BOOTREPLY`].
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Flags ([`FLAG_BROADCAST`]).
    pub flags: u16,
    /// The client's current address.
    pub ciaddr: Ipv4Addr,
    /// The address offered or granted.
    pub yiaddr: Ipv4Addr,
    /// The next server (boot server).
    pub siaddr: Ipv4Addr,
    /// The relay agent.
    pub giaddr: Ipv4Addr,
    /// The client's hardware address (`hlen` bytes of `chaddr`).
    pub chaddr: Vec<u8>,
    /// Options other than PAD and END, in order.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A request from the Ethernet address `mac`: no addresses, no options.
    pub fn request(xid: u32, mac: [u8; 6]) -> Self {
        Self {
            op: BOOTREQUEST,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac.to_vec(),
            options: Vec::new(),
        }
    }

    /// Appends an option (values longer than 255 bytes are cut).
    pub fn push_option(&mut self, code: u8, value: &[u8]) -> &mut Self {
        self.options
            .push((code, value[..value.len().min(255)].to_vec()));
        self
    }

    /// The bytes of the message, padded to [`MIN_MESSAGE`]. `chaddr` beyond 16 bytes is cut.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_MESSAGE);
        let hlen = self.chaddr.len().min(16);
        out.extend_from_slice(&[self.op, 1, u8::try_from(hlen).expect("at most 16"), 0]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for address in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&address.octets());
        }
        let mut chaddr = [0u8; 16];
        chaddr[..hlen].copy_from_slice(&self.chaddr[..hlen]);
        out.extend_from_slice(&chaddr);
        out.resize(OPTIONS_AT - MAGIC.len(), 0); // sname and file
        out.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            out.push(*code);
            out.push(u8::try_from(value.len().min(255)).expect("at most 255"));
            out.extend_from_slice(&value[..value.len().min(255)]);
        }
        out.push(END);
        if out.len() < MIN_MESSAGE {
            out.resize(MIN_MESSAGE, PAD);
        }
        out
    }

    /// Reads a message. Anything after END is ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < OPTIONS_AT {
            return Err(Error::Truncated(bytes.len()));
        }
        if bytes[OPTIONS_AT - 4..OPTIONS_AT] != MAGIC {
            return Err(Error::NoCookie);
        }
        let hlen = bytes[2];
        if hlen > 16 {
            return Err(Error::HardwareLength(hlen));
        }
        let u32_at = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut options = Vec::new();
        let mut at = OPTIONS_AT;
        while let Some(&code) = bytes.get(at) {
            match code {
                PAD => at += 1,
                END => break,
                _ => {
                    let cut = Error::OptionCut { code, offset: at };
                    let len = usize::from(*bytes.get(at + 1).ok_or(cut.clone())?);
                    let value = bytes.get(at + 2..at + 2 + len).ok_or(cut)?;
                    options.push((code, value.to_vec()));
                    at += 2 + len;
                }
            }
        }
        Ok(Self {
            op: bytes[0],
            xid: u32_at(4),
            flags: u16::from_be_bytes([bytes[10], bytes[11]]),
            ciaddr: u32_at(12).into(),
            yiaddr: u32_at(16).into(),
            siaddr: u32_at(20).into(),
            giaddr: u32_at(24).into(),
            chaddr: bytes[28..28 + usize::from(hlen)].to_vec(),
            options,
        })
    }

    /// The first value of option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// The message type (option 53), if present and known.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(option::MESSAGE_TYPE)? {
            [byte] => MessageType::from_byte(*byte),
            _ => None,
        }
    }

    /// Option `code` as a list of addresses (a length not a multiple of 4: none).
    pub fn addresses(&self, code: u8) -> Vec<Ipv4Addr> {
        match self.option(code) {
            Some(value) if value.len() % 4 == 0 => value
                .chunks_exact(4)
                .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Option `code` as one address.
    pub fn address(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code)? {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// Option `code` as a 32-bit number.
    pub fn number(&self, code: u8) -> Option<u32> {
        Some(u32::from_be_bytes(self.option(code)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4 as reference;
    use dhcproto::{Decodable, Decoder, Encodable};
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn a_request_reads_back_with_dhcproto() {
        let mut message = Message::request(0xdead_beef, MAC);
        message.flags = FLAG_BROADCAST;
        message
            .push_option(option::MESSAGE_TYPE, &[MessageType::Request as u8])
            .push_option(option::REQUESTED_ADDRESS, &[10, 0, 2, 15])
            .push_option(option::PARAMETER_LIST, &[1, 3, 6]);
        let bytes = message.encode();
        assert_eq!(bytes.len(), MIN_MESSAGE);
        let theirs = reference::Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(theirs.opcode(), reference::Opcode::BootRequest);
        assert_eq!(theirs.xid(), 0xdead_beef);
        assert!(theirs.flags().broadcast());
        assert_eq!(theirs.chaddr(), &MAC);
        assert_eq!(
            theirs.opts().msg_type(),
            Some(reference::MessageType::Request)
        );
        assert_eq!(
            theirs.opts().get(reference::OptionCode::RequestedIpAddress),
            Some(&reference::DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                10, 0, 2, 15
            )))
        );
    }

    #[test]
    fn a_reply_written_by_dhcproto_reads_here() {
        let mut theirs = reference::Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        theirs.set_opcode(reference::Opcode::BootReply);
        let options = theirs.opts_mut();
        options.insert(reference::DhcpOption::MessageType(
            reference::MessageType::Offer,
        ));
        options.insert(reference::DhcpOption::SubnetMask(Ipv4Addr::new(
            255, 255, 255, 0,
        )));
        options.insert(reference::DhcpOption::Router(vec![
            Ipv4Addr::new(10, 0, 2, 1),
            Ipv4Addr::new(10, 0, 2, 9),
        ]));
        options.insert(reference::DhcpOption::AddressLeaseTime(86400));
        let ours = Message::decode(&theirs.to_vec().unwrap()).unwrap();
        assert_eq!(ours.op, BOOTREPLY);
        assert_eq!(ours.xid, 7);
        assert_eq!(ours.chaddr, MAC);
        assert_eq!(ours.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(ours.siaddr, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(ours.message_type(), Some(MessageType::Offer));
        assert_eq!(
            ours.address(option::SUBNET_MASK),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            ours.addresses(option::ROUTER),
            [Ipv4Addr::new(10, 0, 2, 1), Ipv4Addr::new(10, 0, 2, 9)]
        );
        assert_eq!(ours.number(option::LEASE_TIME), Some(86400));
        assert_eq!(ours.address(option::DNS), None);
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let good = Message::request(1, MAC).encode();
        assert_eq!(Message::decode(&good[..239]), Err(Error::Truncated(239)));
        let mut bad = good.clone();
        bad[236] = 0;
        assert_eq!(Message::decode(&bad), Err(Error::NoCookie));
        let mut bad = good.clone();
        bad[2] = 17;
        assert_eq!(Message::decode(&bad), Err(Error::HardwareLength(17)));
        let mut bad = good[..240].to_vec();
        bad.extend_from_slice(&[option::ROUTER, 8, 10, 0]);
        assert_eq!(
            Message::decode(&bad),
            Err(Error::OptionCut {
                code: option::ROUTER,
                offset: 240
            })
        );
    }

    fn any_message() -> impl Strategy<Value = Message> {
        (
            any::<(u8, u32, u16, [u32; 4])>(),
            proptest::collection::vec(any::<u8>(), 0..=16),
            proptest::collection::vec(
                (1u8..=254, proptest::collection::vec(any::<u8>(), 0..40)),
                0..12,
            ),
        )
            .prop_map(|((op, xid, flags, addresses), chaddr, options)| Message {
                op,
                xid,
                flags,
                ciaddr: addresses[0].into(),
                yiaddr: addresses[1].into(),
                siaddr: addresses[2].into(),
                giaddr: addresses[3].into(),
                chaddr,
                options,
            })
    }

    proptest! {
        #[test]
        fn messages_round_trip(message in any_message()) {
            prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn corrupted_messages_never_panic(message in any_message(), at: usize, byte: u8) {
            let mut bytes = message.encode();
            let index = at % bytes.len();
            bytes[index] = byte;
            if let Ok(decoded) = Message::decode(&bytes) {
                let _ = (decoded.message_type(), decoded.addresses(option::ROUTER));
            }
        }
    }
}
