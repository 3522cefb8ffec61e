//! A DHCPv4 client for the capture kernel: DISCOVER, OFFER, REQUEST, ACK (RFC 2131), with the
//! messages of [`crate::format::dhcp`].
//!
//! The interface has no address yet, so the client sends from `0.0.0.0:68` to the broadcast
//! address on a socket bound to the interface, and sets the BROADCAST flag so that servers
//! broadcast their replies too (a unicast to an address the interface does not have yet would
//! be dropped by the kernel). Retransmissions back off from 2 to 16 seconds until the deadline.
//! The lease is not renewed: a capture takes minutes and leases last hours.
//!
//! A lease may come without a router (QEMU's slirp with `restrict=on` sends none): then only the
//! local subnet is reachable, which is logged, not refused.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::format::dhcp::{
    BOOTREPLY, CLIENT_PORT, FLAG_BROADCAST, Message, MessageType, SERVER_PORT, option,
};

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be set up or used.
    #[error("DHCP on {interface}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// What failed.
        source: std::io::Error,
    },
    /// No server answered in time.
    #[error("DHCP on {interface}: no {waiting_for} within {seconds} s")]
    Timeout {
        /// The interface.
        interface: String,
        /// The message that did not come.
        waiting_for: &'static str,
        /// How long we waited.
        seconds: u64,
    },
    /// The server refused the requested address.
    #[error("DHCP on {interface}: server {server} refused the offered address {address} (NAK)")]
    Refused {
        /// The interface.
        interface: String,
        /// The server that sent the NAK.
        server: Ipv4Addr,
        /// The address requested.
        address: Ipv4Addr,
    },
}

/// An address lease (from an OFFER or an ACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length (classful default when the server sent no mask).
    pub prefix: u8,
    /// The first router, if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server's identifier (option 54), or the packet's `siaddr`.
    pub server: Ipv4Addr,
    /// The lease time in seconds.
    pub seconds: Option<u32>,
}

/// A reply that belongs to our transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// DHCPOFFER.
    Offer(Lease),
    /// DHCPACK.
    Ack(Lease),
    /// DHCPNAK from this server.
    Nak(Ipv4Addr),
}

/// The options we ask servers for.
const WANTED: [u8; 5] = [
    option::SUBNET_MASK,
    option::ROUTER,
    option::DNS,
    option::HOSTNAME,
    option::LEASE_TIME,
];

/// A request of `kind` from `mac` with transaction id `xid`, asking for broadcast replies.
fn request_message(kind: MessageType, mac: [u8; 6], xid: u32) -> Message {
    let mut message = Message::request(xid, mac);
    message.flags = FLAG_BROADCAST;
    let mut client_id = vec![1]; // hardware type: Ethernet
    client_id.extend_from_slice(&mac);
    message
        .push_option(option::MESSAGE_TYPE, &[kind as u8])
        .push_option(option::CLIENT_ID, &client_id)
        .push_option(option::PARAMETER_LIST, &WANTED)
        .push_option(option::MAX_MESSAGE_SIZE, &1500u16.to_be_bytes());
    message
}

/// The DHCPDISCOVER packet.
pub fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    request_message(MessageType::Discover, mac, xid).encode()
}

/// The DHCPREQUEST packet that accepts `offer`.
pub fn request(mac: [u8; 6], xid: u32, offer: &Lease) -> Vec<u8> {
    let mut message = request_message(MessageType::Request, mac, xid);
    message
        .push_option(option::REQUESTED_ADDRESS, &offer.address.octets())
        .push_option(option::SERVER_ID, &offer.server.octets());
    message.encode()
}

/// Reads a packet received on port 68: `None` when it is not a reply to our transaction (other
/// clients' replies are broadcast too) or is malformed.
pub fn parse_reply(packet: &[u8], mac: [u8; 6], xid: u32) -> Option<Reply> {
    let message = Message::decode(packet).ok()?;
    if message.op != BOOTREPLY || message.xid != xid || message.chaddr.get(..6) != Some(&mac[..]) {
        return None;
    }
    let server = message.address(option::SERVER_ID).unwrap_or(message.siaddr);
    let kind = message.message_type()?;
    if kind == MessageType::Nak {
        return Some(Reply::Nak(server));
    }
    let address = message.yiaddr;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    let prefix = match message.address(option::SUBNET_MASK).map(u32::from) {
        Some(mask)
            if mask.leading_ones() < 32 && mask.checked_shl(mask.leading_ones()) == Some(0) =>
        {
            u8::try_from(mask.leading_ones()).expect("at most 32")
        }
        _ => match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let lease = Lease {
        address,
        prefix,
        router: message.addresses(option::ROUTER).first().copied(),
        dns: message.addresses(option::DNS),
        server,
        seconds: message.number(option::LEASE_TIME),
    };
    match kind {
        MessageType::Offer => Some(Reply::Offer(lease)),
        MessageType::Ack => Some(Reply::Ack(lease)),
        _ => None,
    }
}

/// A transaction id that differs between boots and interfaces.
fn transaction_id(mac: [u8; 6]) -> u32 {
    let mut random = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        random = nanos.to_ne_bytes();
    }
    u32::from_ne_bytes(random) ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

/// Obtains a lease for `interface` (whose MAC is `mac`), trying until `deadline`.
pub fn acquire(interface: &str, mac: [u8; 6], deadline: Instant) -> Result<Lease, Error> {
    let socket_error = |source| Error::Socket {
        interface: interface.to_owned(),
        source,
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT))
        .map_err(socket_error)?;
    socket.set_broadcast(true).map_err(socket_error)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    )
    .map_err(|e| socket_error(e.into()))?;
    let started = Instant::now();
    let xid = transaction_id(mac);
    let offer = exchange(
        &socket,
        (&discover(mac, xid), mac, xid),
        deadline,
        |reply| match reply {
            Reply::Offer(lease) => Some(lease),
            _ => None,
        },
    )
    .map_err(socket_error)?
    .ok_or_else(|| Error::Timeout {
        interface: interface.to_owned(),
        waiting_for: "offer",
        seconds: started.elapsed().as_secs(),
    })?;
    let answer = exchange(
        &socket,
        (&request(mac, xid, &offer), mac, xid),
        deadline,
        |reply| match reply {
            Reply::Ack(lease) if lease.address == offer.address => Some(Ok(lease)),
            Reply::Nak(server) if server == offer.server => Some(Err(server)),
            _ => None,
        },
    )
    .map_err(socket_error)?
    .ok_or_else(|| Error::Timeout {
        interface: interface.to_owned(),
        waiting_for: "acknowledgement",
        seconds: started.elapsed().as_secs(),
    })?;
    answer.map_err(|server| Error::Refused {
        interface: interface.to_owned(),
        server,
        address: offer.address,
    })
}

/// Broadcasts `packet` and waits for a reply `accept` takes, retransmitting with back-off
/// until `deadline`. `Ok(None)` when the deadline passed.
fn exchange<T>(
    socket: &UdpSocket,
    (packet, mac, xid): (&[u8], [u8; 6], u32),
    deadline: Instant,
    mut accept: impl FnMut(Reply) -> Option<T>,
) -> std::io::Result<Option<T>> {
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let mut interval = Duration::from_secs(2);
    let mut buffer = vec![0u8; 1500];
    while Instant::now() < deadline {
        socket.send_to(packet, broadcast)?;
        let resend_at = (Instant::now() + interval).min(deadline);
        loop {
            let now = Instant::now();
            if now >= resend_at {
                break;
            }
            socket.set_read_timeout(Some(resend_at - now))?;
            match socket.recv(&mut buffer) {
                Ok(n) => {
                    if let Some(found) = parse_reply(&buffer[..n], mac, xid).and_then(&mut accept) {
                        return Ok(Some(found));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        interval = (interval * 2).min(Duration::from_secs(16));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// What slirp's server answers: yiaddr, siaddr, and the given options.
    fn server_reply(kind: MessageType, xid: u32, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut message = Message::request(xid, MAC);
        message.op = BOOTREPLY;
        message.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        message.siaddr = SERVER;
        message.push_option(option::MESSAGE_TYPE, &[kind as u8]);
        for (code, value) in options {
            message.push_option(*code, value);
        }
        message.encode()
    }

    #[test]
    fn discover_and_request_carry_what_servers_need() {
        let message = Message::decode(&discover(MAC, 0xdead_beef)).unwrap();
        assert_eq!(message.xid, 0xdead_beef);
        assert_eq!(message.chaddr, MAC);
        assert_eq!(message.flags, FLAG_BROADCAST);
        assert_eq!(message.message_type(), Some(MessageType::Discover));
        assert_eq!(
            message.option(option::CLIENT_ID),
            Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56][..])
        );

        let offer = Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            router: None,
            dns: Vec::new(),
            server: SERVER,
            seconds: Some(86400),
        };
        let message = Message::decode(&request(MAC, 7, &offer)).unwrap();
        assert_eq!(message.message_type(), Some(MessageType::Request));
        assert_eq!(
            message.address(option::REQUESTED_ADDRESS),
            Some(offer.address)
        );
        assert_eq!(message.address(option::SERVER_ID), Some(SERVER));
    }

    #[test]
    fn replies_are_read_and_others_ignored() {
        let offer = server_reply(
            MessageType::Offer,
            9,
            &[
                (option::SERVER_ID, &[10, 0, 2, 2]),
                (option::SUBNET_MASK, &[255, 255, 255, 0]),
                (option::DNS, &[10, 0, 2, 3]),
                (option::LEASE_TIME, &86400u32.to_be_bytes()),
            ],
        );
        assert_eq!(
            parse_reply(&offer, MAC, 9),
            Some(Reply::Offer(Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: None,
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: SERVER,
                seconds: Some(86400),
            }))
        );
        // Another transaction, another client, a request: not ours.
        assert_eq!(parse_reply(&offer, MAC, 10), None);
        assert_eq!(parse_reply(&offer, [0; 6], 9), None);
        assert_eq!(parse_reply(&discover(MAC, 9), MAC, 9), None);
        // No mask (or a non-contiguous one): classful; the server falls back to siaddr.
        let ack = server_reply(
            MessageType::Ack,
            9,
            &[
                (option::ROUTER, &[10, 0, 2, 1]),
                (option::SUBNET_MASK, &[255, 0, 255, 0]),
            ],
        );
        let Some(Reply::Ack(lease)) = parse_reply(&ack, MAC, 9) else {
            panic!("not an ack");
        };
        assert_eq!(lease.prefix, 8);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(lease.server, SERVER);
        let nak = server_reply(MessageType::Nak, 9, &[]);
        assert_eq!(parse_reply(&nak, MAC, 9), Some(Reply::Nak(SERVER)));
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse_reply(&packet, MAC, 9);
        }

        #[test]
        fn corrupted_replies_never_panic(position: usize, byte: u8) {
            let mut packet = server_reply(MessageType::Offer, 9, &[(option::SUBNET_MASK, &[255, 255, 255, 0])]);
            let index = position % packet.len();
            packet[index] = byte;
            let _ = parse_reply(&packet, MAC, 9);
        }
    }
}
