//! A DHCPv4 client for the capture kernel: DISCOVER, OFFER, REQUEST, ACK (RFC 2131).
//!
//! The packets are built and read with smoltcp's `wire` module, whose accessors are made for
//! untrusted input under `panic = "abort"` (once `Packet::new_checked` accepted a buffer, no
//! accessor panics). The `dhcproto` crate was tried first and dropped: its decoder panics on
//! malformed replies (`hlen` above 16, debug assertions on option lengths; our property tests
//! found both within seconds) and it added 300 KB (a DNS library, URL and IDNA tables) to the
//! static binary. It stays the independent reference of this module's tests. smoltcp keeps at
//! most three DNS servers of a lease, which is what resolv.conf can use anyway.
//!
//! The interface has no address yet, so the client sends from `0.0.0.0:68` to the broadcast
//! address on a socket bound to the interface, and sets the BROADCAST flag so that servers
//! broadcast their replies too (a unicast to an address the interface does not have yet would
//! be dropped by the kernel). Requests are padded to the full 548-byte BOOTP layout, which
//! QEMU's slirp requires. Retransmissions back off from 2 to 16 seconds until the deadline.
//! The lease is not renewed: a capture takes minutes and leases last hours.
//!
//! A lease may come without a router (QEMU's slirp with `restrict=on` sends none): then only the
//! local subnet is reachable, which is logged, not refused.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpOpCode, DhcpPacket, DhcpRepr,
    EthernetAddress,
};

/// Option codes read or requested here (RFC 2132).
mod option {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers, in order of preference.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// The client's host name.
    pub const HOSTNAME: u8 = 12;
    /// Lease time in seconds.
    pub const LEASE_TIME: u8 = 51;
}

/// The full BOOTP layout: 236 header bytes, the magic cookie and 308 option bytes.
pub const MIN_MESSAGE: usize = 548;

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

/// A request of `kind` from `mac` with transaction id `xid`, asking for broadcast replies,
/// padded to [`MIN_MESSAGE`] bytes.
fn request_packet(kind: DhcpMessageType, mac: [u8; 6], xid: u32, offer: Option<&Lease>) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(mac),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: true,
        requested_ip: offer.map(|o| o.address),
        client_identifier: Some(EthernetAddress(mac)),
        server_identifier: offer.map(|o| o.server),
        parameter_request_list: Some(&WANTED),
        dns_servers: None,
        max_size: Some(1500),
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut buffer = vec![0u8; repr.buffer_len().max(MIN_MESSAGE)];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut buffer))
        .expect("the buffer holds buffer_len() bytes");
    buffer
}

/// The DHCPDISCOVER packet.
pub fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    request_packet(DhcpMessageType::Discover, mac, xid, None)
}

/// The DHCPREQUEST packet that accepts `offer`.
pub fn request(mac: [u8; 6], xid: u32, offer: &Lease) -> Vec<u8> {
    request_packet(DhcpMessageType::Request, mac, xid, Some(offer))
}

/// Reads a packet received on port 68: `None` when it is not a reply to our transaction (other
/// clients' replies are broadcast too) or is malformed.
pub fn parse_reply(packet: &[u8], mac: [u8; 6], xid: u32) -> Option<Reply> {
    let packet = DhcpPacket::new_checked(packet).ok()?;
    if packet.opcode() != DhcpOpCode::Reply
        || packet.transaction_id() != xid
        || packet.client_hardware_address() != EthernetAddress(mac)
    {
        return None;
    }
    let repr = DhcpRepr::parse(&packet).ok()?;
    let server = repr.server_identifier.unwrap_or(repr.server_ip);
    if repr.message_type == DhcpMessageType::Nak {
        return Some(Reply::Nak(server));
    }
    let address = repr.your_ip;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    let prefix = match repr.subnet_mask.map(u32::from) {
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
    // smoltcp reads a router option only when it names exactly one router; the first of a
    // longer list is as good.
    let router = packet
        .options()
        .find(|o| o.kind == option::ROUTER)
        .and_then(|o| <[u8; 4]>::try_from(o.data.get(..4)?).ok())
        .map(Ipv4Addr::from);
    let lease = Lease {
        address,
        prefix,
        router,
        dns: repr.dns_servers.map(|d| d.to_vec()).unwrap_or_default(),
        server,
        seconds: repr.lease_duration,
    };
    match repr.message_type {
        DhcpMessageType::Offer => Some(Reply::Offer(lease)),
        DhcpMessageType::Ack => Some(Reply::Ack(lease)),
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
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT))
        .map_err(socket_error)?;
    socket.set_broadcast(true).map_err(socket_error)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    )
    .map_err(|e| socket_error(e.into()))?;
    let started = Instant::now();
    let timeout = |waiting_for| Error::Timeout {
        interface: interface.to_owned(),
        waiting_for,
        seconds: started.elapsed().as_secs(),
    };
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
    .ok_or_else(|| timeout("offer"))?;
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
    .ok_or_else(|| timeout("acknowledgement"))?;
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
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
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
    use dhcproto::v4 as reference;
    use dhcproto::{Decodable, Decoder, Encodable};
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    /// A server's reply of `kind`, written by dhcproto (the independent reference): yiaddr,
    /// siaddr and the given options.
    fn server_reply(
        kind: reference::MessageType,
        xid: u32,
        options: &[reference::DhcpOption],
    ) -> Vec<u8> {
        let mut message = reference::Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            ADDRESS,
            SERVER,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        message.set_opcode(reference::Opcode::BootReply);
        message
            .opts_mut()
            .insert(reference::DhcpOption::MessageType(kind));
        for option in options {
            message.opts_mut().insert(option.clone());
        }
        message.to_vec().unwrap()
    }

    fn decoded(packet: &[u8]) -> reference::Message {
        reference::Message::decode(&mut Decoder::new(packet)).unwrap()
    }

    #[test]
    fn discover_and_request_read_right_in_dhcproto() {
        let packet = discover(MAC, 0xdead_beef);
        assert_eq!(packet.len(), MIN_MESSAGE);
        let message = decoded(&packet);
        assert_eq!(message.opcode(), reference::Opcode::BootRequest);
        assert_eq!(message.xid(), 0xdead_beef);
        assert!(message.flags().broadcast());
        assert_eq!(message.chaddr(), &MAC);
        assert_eq!(
            message.opts().msg_type(),
            Some(reference::MessageType::Discover)
        );
        assert_eq!(
            message.opts().get(reference::OptionCode::ClientIdentifier),
            Some(&reference::DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        assert!(matches!(
            message.opts().get(reference::OptionCode::ParameterRequestList),
            Some(reference::DhcpOption::ParameterRequestList(list)) if list.len() == WANTED.len()
        ));

        let offer = Lease {
            address: ADDRESS,
            prefix: 24,
            router: None,
            dns: Vec::new(),
            server: SERVER,
            seconds: Some(86400),
        };
        let packet = request(MAC, 7, &offer);
        assert_eq!(packet.len(), MIN_MESSAGE);
        let message = decoded(&packet);
        assert_eq!(
            message.opts().msg_type(),
            Some(reference::MessageType::Request)
        );
        assert_eq!(
            message
                .opts()
                .get(reference::OptionCode::RequestedIpAddress),
            Some(&reference::DhcpOption::RequestedIpAddress(ADDRESS))
        );
        assert_eq!(
            message.opts().get(reference::OptionCode::ServerIdentifier),
            Some(&reference::DhcpOption::ServerIdentifier(SERVER))
        );
    }

    #[test]
    fn replies_written_by_dhcproto_are_read_and_others_ignored() {
        let offer = server_reply(
            reference::MessageType::Offer,
            9,
            &[
                reference::DhcpOption::ServerIdentifier(SERVER),
                reference::DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                reference::DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]),
                reference::DhcpOption::AddressLeaseTime(86400),
            ],
        );
        assert_eq!(
            parse_reply(&offer, MAC, 9),
            Some(Reply::Offer(Lease {
                address: ADDRESS,
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
        // Two routers: the first. No mask (or a non-contiguous one): classful. No server
        // identifier: siaddr.
        let ack = server_reply(
            reference::MessageType::Ack,
            9,
            &[
                reference::DhcpOption::Router(vec![
                    Ipv4Addr::new(10, 0, 2, 1),
                    Ipv4Addr::new(10, 0, 2, 9),
                ]),
                reference::DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)),
            ],
        );
        let Some(Reply::Ack(lease)) = parse_reply(&ack, MAC, 9) else {
            panic!("not an ack");
        };
        assert_eq!(lease.prefix, 8);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(lease.server, SERVER);
        let nak = server_reply(reference::MessageType::Nak, 9, &[]);
        assert_eq!(parse_reply(&nak, MAC, 9), Some(Reply::Nak(SERVER)));
    }

    proptest! {
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse_reply(&packet, MAC, 9);
        }

        #[test]
        fn corrupted_replies_never_panic(position: usize, byte: u8, cut: usize) {
            let mut packet = server_reply(
                reference::MessageType::Offer,
                9,
                &[
                    reference::DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                    reference::DhcpOption::Router(vec![SERVER]),
                    reference::DhcpOption::DomainNameServer(vec![SERVER; 5]),
                ],
            );
            let index = position % packet.len();
            packet[index] = byte;
            packet.truncate(packet.len() - cut % 40);
            let _ = parse_reply(&packet, MAC, 9);
        }
    }
}
