//! dracut's network parameters on the kernel command line: `ip=`, `ifname=` and `nameserver=`.
//!
//! Debian's kernels are built without `CONFIG_IP_PNP`, so nothing applies `ip=` unless the
//! initramfs does. kdump-utils writes these parameters into the image's
//! `/etc/cmdline.d/40ip.conf` (for instance `ip=kdump-eth0:dhcp
//! ifname=kdump-eth0:52:54:00:12:34:56`), which [`crate::runtime::kernel::cmdline`] appends
//! to the kernel's, and users write them by hand. The forms, as dracut.cmdline(7) documents
//! them (plus `<interface>:none`, which brings a link up without an address):
//!
//! - `ip={dhcp|on|any}`: DHCP on every interface;
//! - `ip=<interface>:{dhcp|on|any}[:[<mtu>][:<macaddr>]]`;
//! - `ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<hostname>:<interface>:{none|off|dhcp|on|any}[:[<mtu>][:<macaddr>]]`,
//!   or with `[:[<dns1>][:<dns2>]]` after the method;
//! - `ifname=<interface>:<MAC>` names the interface with that MAC address;
//! - `nameserver=<IP>` adds a DNS server.
//!
//! IPv6 (`dhcp6`, `auto6`, bracketed addresses) and iBFT are refused with a clear error: the
//! capture runtime configures IPv4 only. Parsing is pure; [`super`] applies the result.

use std::net::Ipv4Addr;

/// Why a network parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The parameter has a form dracut does not define.
    #[error("{param}: {reason}")]
    Malformed {
        /// The whole parameter, `ip=...`.
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The parameter asks for something this runtime does not do.
    #[error("{param}: {what} is not supported by rkdump's capture runtime (IPv4 only)")]
    Unsupported {
        /// The whole parameter.
        param: String,
        /// The unsupported part.
        what: String,
    },
}

/// How an interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// DHCP (`dhcp`, `on`, `any`).
    Dhcp,
    /// A fixed address.
    Static {
        /// The interface's address.
        address: Ipv4Addr,
        /// The network prefix length (from the netmask).
        prefix: u8,
        /// The default gateway, if one was given.
        gateway: Option<Ipv4Addr>,
    },
    /// Bring the link up without an address (`none`/`off` without a client address).
    LinkOnly,
}

/// One `ip=` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpParam {
    /// The interface, or `None` for every interface.
    pub interface: Option<String>,
    /// How it gets its address.
    pub method: Method,
    /// The MTU to set.
    pub mtu: Option<u32>,
    /// The MAC address to set.
    pub mac: Option<[u8; 6]>,
    /// DNS servers given with a static address.
    pub dns: Vec<Ipv4Addr>,
    /// The host name given with a static address.
    pub hostname: Option<String>,
}

impl IpParam {
    /// `ip=dhcp`: DHCP on every interface, what applies without any `ip=`.
    pub fn dhcp_everywhere() -> Self {
        Self {
            interface: None,
            method: Method::Dhcp,
            mtu: None,
            mac: None,
            dns: Vec::new(),
            hostname: None,
        }
    }
}

/// One `ifname=` parameter: the interface with `mac` is to be called `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName {
    /// The new interface name.
    pub name: String,
    /// The MAC address that identifies the interface.
    pub mac: [u8; 6],
}

/// Everything the command line says about the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkParams {
    /// The `ip=` parameters, in order.
    pub ip: Vec<IpParam>,
    /// The `ifname=` parameters.
    pub ifnames: Vec<IfName>,
    /// The `nameserver=` parameters.
    pub nameservers: Vec<Ipv4Addr>,
}

/// Reads the network parameters of a kernel command line. Refused parameters are returned
/// next to the accepted ones, so the caller can log them and go on.
pub fn parse(cmdline: &str) -> (NetworkParams, Vec<Error>) {
    let mut params = NetworkParams::default();
    let mut errors = Vec::new();
    for word in cmdline.split_whitespace() {
        let result = if let Some(value) = word.strip_prefix("ip=") {
            parse_ip(value).map(|p| params.ip.push(p))
        } else if let Some(value) = word.strip_prefix("ifname=") {
            parse_ifname(value).map(|p| params.ifnames.push(p))
        } else if let Some(value) = word.strip_prefix("nameserver=") {
            value
                .parse()
                .map(|a| params.nameservers.push(a))
                .map_err(|_| malformed(word, "not an IPv4 address"))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    (params, errors)
}

fn malformed(param: &str, reason: &str) -> Error {
    Error::Malformed {
        param: param.to_owned(),
        reason: reason.to_owned(),
    }
}

fn unsupported(param: &str, what: &str) -> Error {
    Error::Unsupported {
        param: param.to_owned(),
        what: what.to_owned(),
    }
}

/// Parses the value of one `ip=` parameter.
pub fn parse_ip(value: &str) -> Result<IpParam, Error> {
    let param = format!("ip={value}");
    if value.contains('[') {
        return Err(unsupported(&param, "an IPv6 address"));
    }
    let fields: Vec<&str> = value.split(':').collect();
    let mut result = IpParam::dhcp_everywhere();
    match fields.as_slice() {
        [method] => {
            result.method = method_of(&param, method, None)?;
            if result.method != Method::Dhcp {
                return Err(malformed(&param, "expected dhcp, on or any"));
            }
        }
        [interface, method, rest @ ..] if fields.len() < 7 || is_method_word(method) => {
            result.interface = Some(interface_name(&param, interface)?);
            result.method = method_of(&param, method, None)?;
            mtu_and_mac(&param, rest, &mut result)?;
        }
        [
            client,
            _peer,
            gateway,
            netmask,
            hostname,
            interface,
            method,
            rest @ ..,
        ] => {
            if !interface.is_empty() {
                result.interface = Some(interface_name(&param, interface)?);
            }
            if !hostname.is_empty() {
                result.hostname = Some((*hostname).to_owned());
            }
            let fixed = if client.is_empty() {
                None
            } else {
                let address = address(&param, "client address", client)?;
                let prefix = prefix(&param, netmask, address)?;
                let gateway = if gateway.is_empty() {
                    None
                } else {
                    Some(self::address(&param, "gateway", gateway)?)
                };
                Some(Method::Static {
                    address,
                    prefix,
                    gateway,
                })
            };
            result.method = method_of(&param, method, fixed)?;
            if rest.first().is_some_and(|f| f.parse::<Ipv4Addr>().is_ok()) {
                if rest.len() > 2 {
                    return Err(malformed(&param, "more than two DNS servers"));
                }
                for dns in rest.iter().filter(|f| !f.is_empty()) {
                    result.dns.push(address(&param, "DNS server", dns)?);
                }
            } else {
                mtu_and_mac(&param, rest, &mut result)?;
            }
        }
        _ => return Err(malformed(&param, "empty")),
    }
    Ok(result)
}

/// Whether `word` names an address method (the second field of the `<interface>:<method>`
/// form; in the long form that field is the peer address).
fn is_method_word(word: &str) -> bool {
    !word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit())
}

/// The address method: `fixed` is the static configuration when a client address was given.
fn method_of(param: &str, word: &str, fixed: Option<Method>) -> Result<Method, Error> {
    match word {
        "dhcp" | "on" | "any" | "single-dhcp" => Ok(Method::Dhcp),
        "none" | "off" | "" => Ok(fixed.unwrap_or(Method::LinkOnly)),
        "dhcp6" | "auto6" | "either6" | "link6" => Err(unsupported(param, word)),
        "ibft" => Err(unsupported(param, "iBFT")),
        _ => Err(malformed(param, &format!("unknown method {word:?}"))),
    }
}

fn interface_name(param: &str, name: &str) -> Result<String, Error> {
    // IFNAMSIZ is 16 with the terminating NUL.
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name == "."
        || name == ".."
        || !name.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed(
            param,
            &format!("{name:?} is not an interface name"),
        ));
    }
    Ok(name.to_owned())
}

fn address(param: &str, what: &str, text: &str) -> Result<Ipv4Addr, Error> {
    text.parse()
        .map_err(|_| malformed(param, &format!("{what} {text:?} is not an IPv4 address")))
}

/// A netmask, dotted (`255.255.255.0`) or as a prefix length (`24`); empty means the classful
/// default of `address`, as the kernel's own `ip=` did.
fn prefix(param: &str, netmask: &str, address: Ipv4Addr) -> Result<u8, Error> {
    if netmask.is_empty() {
        return Ok(match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        });
    }
    if let Ok(length) = netmask.parse::<u8>() {
        return if length <= 32 {
            Ok(length)
        } else {
            Err(malformed(
                param,
                &format!("prefix length {length} is over 32"),
            ))
        };
    }
    let mask = u32::from(self::address(param, "netmask", netmask)?);
    let length = mask.leading_ones();
    if mask.checked_shl(length).unwrap_or(0) != 0 {
        return Err(malformed(
            param,
            &format!("netmask {netmask} is not contiguous"),
        ));
    }
    Ok(u8::try_from(length).expect("at most 32"))
}

/// The optional `[:[<mtu>][:<macaddr>]]` tail; the MAC address has its own colons.
fn mtu_and_mac(param: &str, rest: &[&str], result: &mut IpParam) -> Result<(), Error> {
    let (mtu, mac) = match rest {
        [] => (None, None),
        [mtu] => (Some(*mtu), None),
        [mtu, mac @ ..] if mac.len() == 6 => (Some(*mtu), Some(mac)),
        _ => {
            return Err(malformed(
                param,
                "expected [:mtu][:macaddr] after the method",
            ));
        }
    };
    if let Some(mtu) = mtu.filter(|m| !m.is_empty()) {
        let value: u32 = mtu
            .parse()
            .ok()
            .filter(|m| (68..=65535).contains(m))
            .ok_or_else(|| malformed(param, &format!("MTU {mtu:?} is not 68 to 65535")))?;
        result.mtu = Some(value);
    }
    if let Some(mac) = mac {
        result.mac = Some(mac_address(param, &mac.join(":"))?);
    }
    Ok(())
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (either case).
pub fn mac_address(param: &str, text: &str) -> Result<[u8; 6], Error> {
    let bad = || malformed(param, &format!("{text:?} is not a MAC address"));
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

fn parse_ifname(value: &str) -> Result<IfName, Error> {
    let param = format!("ifname={value}");
    let (name, mac) = value
        .split_once(':')
        .ok_or_else(|| malformed(&param, "expected <interface>:<MAC>"))?;
    Ok(IfName {
        name: interface_name(&param, name)?,
        mac: mac_address(&param, mac)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(value: &str) -> IpParam {
        parse_ip(value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    #[test]
    fn dhcp_forms() {
        assert_eq!(ip("dhcp").interface, None);
        assert_eq!(ip("dhcp").method, Method::Dhcp);
        let p = ip("kdump-eth0:dhcp");
        assert_eq!(p.interface.as_deref(), Some("kdump-eth0"));
        assert_eq!(p.method, Method::Dhcp);
        let p = ip("eth0:on:1400:52:54:00:12:34:56");
        assert_eq!(p.mtu, Some(1400));
        assert_eq!(p.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(ip("eth0:any::52:54:00:12:34:56").mtu, None);
    }

    #[test]
    fn static_forms() {
        // kdump-utils' static form for a slirp guest.
        let p = ip("10.0.2.15::10.0.2.2:255.255.255.0::kdump-eth0:none");
        assert_eq!(
            p.method,
            Method::Static {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            }
        );
        assert_eq!(p.interface.as_deref(), Some("kdump-eth0"));
        let p = ip("192.168.1.9:::22:web01:eth1:off:10.0.0.53:10.0.0.54");
        assert_eq!(
            p.method,
            Method::Static {
                address: Ipv4Addr::new(192, 168, 1, 9),
                prefix: 22,
                gateway: None,
            }
        );
        assert_eq!(p.hostname.as_deref(), Some("web01"));
        assert_eq!(
            p.dns,
            [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)]
        );
        let p = ip("10.1.2.3:::::eth0:none:9000");
        assert_eq!(p.mtu, Some(9000));
        assert!(matches!(p.method, Method::Static { prefix: 8, .. }));
        // No client address: the method decides.
        assert_eq!(ip(":::::eth0:dhcp").method, Method::Dhcp);
        assert_eq!(ip(":::::eth0:none").method, Method::LinkOnly);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases = [
            ("dhcp6", "dhcp6 is not supported"),
            ("eth0:auto6", "auto6 is not supported"),
            ("[fd00::1]::::::none", "IPv6 address is not supported"),
            ("eth0:ibft", "iBFT is not supported"),
            ("none", "expected dhcp, on or any"),
            ("eth0:sometimes", "unknown method \"sometimes\""),
            (
                "10.0.2.15::10.0.2.2:255.0.255.0::eth0:none",
                "not contiguous",
            ),
            ("10.0.2.15::10.0.2.2:33::eth0:none", "prefix length 33"),
            ("10.0.2.300::::::none", "client address \"10.0.2.300\""),
            ("eth0:dhcp:20", "MTU \"20\""),
            ("eth0:dhcp:1500:52:54:00:12:34", "expected [:mtu][:macaddr]"),
            ("eth0:dhcp:1500:52:54:00:12:34:zz", "is not a MAC address"),
            ("a/b:dhcp", "is not an interface name"),
            ("", "expected dhcp, on or any"),
        ];
        for (value, expected) in cases {
            let error = parse_ip(value).expect_err(value).to_string();
            assert!(error.starts_with(&format!("ip={value}: ")), "{error}");
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn a_command_line_with_everything() {
        let (params, errors) = parse(
            "console=ttyS0 ip=kdump-eth0:dhcp ifname=kdump-eth0:52:54:00:AB:cd:ef \
             nameserver=10.0.2.3 ip=dhcp6 nameserver=x irqpoll",
        );
        assert_eq!(params.ip.len(), 1);
        assert_eq!(
            params.ifnames,
            [IfName {
                name: "kdump-eth0".into(),
                mac: [0x52, 0x54, 0, 0xab, 0xcd, 0xef]
            }]
        );
        assert_eq!(params.nameservers, [Ipv4Addr::new(10, 0, 2, 3)]);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("ip=dhcp6: "));
        assert_eq!(errors[1], "nameserver=x: not an IPv4 address");
    }

    proptest! {
        #[test]
        fn arbitrary_parameters_never_panic(value in "[0-9a-f.:\\[\\]/ethdcpnoy-]{0,60}") {
            let _ = parse_ip(&value);
            let _ = parse(&format!("ip={value} ifname={value} nameserver={value}"));
        }

        #[test]
        fn static_parameters_round_trip(
            address: [u8; 4], prefix in 0u8..=32, gateway: Option<[u8; 4]>, mtu in 68u32..=9000,
        ) {
            let gateway = gateway.map(Ipv4Addr::from);
            let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
            let value = format!(
                "{}::{}:{mask}::eth0:none:{mtu}",
                Ipv4Addr::from(address),
                gateway.map(|g| g.to_string()).unwrap_or_default(),
            );
            let p = parse_ip(&value).unwrap();
            prop_assert_eq!(p.method, Method::Static { address: address.into(), prefix, gateway });
            prop_assert_eq!(p.mtu, Some(mtu));
        }
    }
}
