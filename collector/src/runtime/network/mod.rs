//! Network bring-up in the capture kernel, without dracut's network scripts, udev or a shell.
//!
//! # Brief overview
//!
//! When the target is on the network (ssh, NFS, a `--mount` of an NFS export), the capture
//! first brings the network up, each step logged with its duration:
//!
//! 1. read dracut's `ip=`, `ifname=` and `nameserver=` from the kernel command line and
//!    `/etc/cmdline.d/*.conf`, where kdump-utils writes them ([`cmdline`]); without `ip=`, DHCP
//!    on every Ethernet interface (each gets a share of the time);
//! 2. rename interfaces as `ifname=` says (kdump-utils names them `kdump-<name>`);
//! 3. bring each named interface up (MAC address and MTU first, if given) and wait for its
//!    carrier;
//! 4. configure its address statically or by DHCP ([`dhcp`]), and the default route when one is
//!    given (a lease may have none);
//! 5. write `/etc/resolv.conf` when DNS servers are known, so host names in kdump.conf resolve.
//!
//! The NIC drivers are already loaded: coldplug loads the driver of every device present. The
//! interface system calls live in [`crate::sys`]; this module only decides.

pub mod cmdline;
pub mod dhcp;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use cmdline::{IpParam, Method, NetworkParams};

use super::log::Log;
use crate::sys;

/// `IFF_UP` of `<linux/if.h>`.
const IFF_UP: i16 = 0x1;
/// `ARPHRD_ETHER`: the `type` in sysfs of Ethernet interfaces.
const ARPHRD_ETHER: &str = "1";
/// How long to wait for further links once the first interface has one.
const CARRIER_GRACE: Duration = Duration::from_secs(3);
/// Where the kernel lists network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Why the network could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No interface to configure exists.
    #[error("no network interface {0}")]
    NoInterface(String),
    /// An interface operation failed.
    #[error("{interface}: {action}: {source}")]
    Interface {
        /// The interface.
        interface: String,
        /// What was being done.
        action: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// No interface got a carrier in time.
    #[error("no link on {interfaces} within {seconds} s (is a cable plugged in?)")]
    NoCarrier {
        /// The interfaces waited for.
        interfaces: String,
        /// How long.
        seconds: u64,
    },
    /// DHCP failed on every candidate interface.
    #[error(transparent)]
    Dhcp(#[from] dhcp::Error),
}

/// A network interface of the capture kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`, `enp1s0`, `kdump-eth0`).
    pub name: String,
    /// Its hardware address.
    pub mac: [u8; 6],
}

/// An interface once configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The interface.
    pub interface: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
}

/// The Ethernet interfaces, by name.
pub fn interfaces() -> std::io::Result<Vec<Interface>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(SYS_CLASS_NET)? {
        let path = entry?.path();
        let read = |file: &str| {
            std::fs::read_to_string(path.join(file))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        if read("type") != ARPHRD_ETHER {
            continue;
        }
        let Ok(mac) = cmdline::mac_address("", &read("address")) else {
            continue;
        };
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            found.push(Interface {
                name: name.to_owned(),
                mac,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Whether `interface` has a carrier (its link is up). Readable only while it is up.
fn has_carrier(interface: &str) -> bool {
    std::fs::read_to_string(Path::new(SYS_CLASS_NET).join(interface).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

fn interface_error(interface: &str, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let interface = interface.to_owned();
    move |source| Error::Interface {
        interface,
        action,
        source,
    }
}

/// Renames interfaces as the `ifname=` parameters say.
fn rename(params: &NetworkParams, log: &Log) -> Result<(), Error> {
    for wanted in &params.ifnames {
        let present = interfaces().map_err(interface_error(&wanted.name, "listing interfaces"))?;
        match present.iter().find(|i| i.mac == wanted.mac) {
            Some(found) if found.name == wanted.name => {}
            Some(found) => {
                sys::rename_interface(&found.name, &wanted.name)
                    .map_err(interface_error(&found.name, "renaming"))?;
                log.line(&format!("renamed {} to {}", found.name, wanted.name));
            }
            None => log.line(&format!(
                "ifname={}: no interface has MAC {}",
                wanted.name,
                mac_text(wanted.mac)
            )),
        }
    }
    Ok(())
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Sets the MAC address and MTU `param` asks for and brings `interface` up.
fn link_up(interface: &str, param: &IpParam) -> Result<(), Error> {
    if let Some(mac) = param.mac {
        sys::set_interface_mac(interface, mac)
            .map_err(interface_error(interface, "setting the MAC"))?;
    }
    if let Some(mtu) = param.mtu {
        sys::set_interface_mtu(interface, mtu)
            .map_err(interface_error(interface, "setting the MTU"))?;
    }
    let flags =
        sys::interface_flags(interface).map_err(interface_error(interface, "reading flags"))?;
    sys::set_interface_flags(interface, flags | IFF_UP)
        .map_err(interface_error(interface, "bringing the link up"))
}

/// Waits until one of `candidates` has a carrier; returns those that have one.
fn wait_for_carrier(
    candidates: &[Interface],
    deadline: Instant,
    started: Instant,
) -> Result<Vec<Interface>, Error> {
    loop {
        let up: Vec<Interface> = candidates
            .iter()
            .filter(|i| has_carrier(&i.name))
            .cloned()
            .collect();
        if !up.is_empty() {
            return Ok(up);
        }
        if Instant::now() >= deadline {
            return Err(Error::NoCarrier {
                interfaces: candidates
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                seconds: started.elapsed().as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Gives `interface` its address and route.
fn configure(
    interface: &str,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    log: &Log,
) -> Result<Configured, Error> {
    sys::set_interface_ipv4(interface, address, prefix)
        .map_err(interface_error(interface, "setting the address"))?;
    match gateway {
        Some(gateway) => match sys::add_default_route(gateway, interface) {
            Ok(()) => {}
            // A second ip= with its own gateway: the first default route stays.
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => log.line(&format!(
                "{interface}: a default route exists already; not adding one via {gateway}"
            )),
            Err(e) => return Err(interface_error(interface, "adding the default route")(e)),
        },
        None => log.line(&format!(
            "{interface}: no default gateway; only {address}/{prefix} is reachable"
        )),
    }
    log.line(&format!(
        "{interface}: {address}/{prefix}{}",
        gateway.map(|g| format!(" via {g}")).unwrap_or_default()
    ));
    Ok(Configured {
        interface: interface.to_owned(),
        address,
        prefix,
        gateway,
    })
}

/// Takes every Ethernet interface down. After giving up on a dead NFS server this stops the
/// kernel's NFS client from reconnecting to it without end — on one CPU that storm kept a
/// capture kernel in the NIC's softirq and stopped it from powering off.
pub fn take_links_down(log: &Log) {
    for interface in interfaces().unwrap_or_default() {
        let result = sys::interface_flags(&interface.name)
            .and_then(|flags| sys::set_interface_flags(&interface.name, flags & !IFF_UP));
        match result {
            Ok(()) => log.line(&format!("{}: link down", interface.name)),
            Err(e) => log.line(&format!("{}: taking the link down: {e}", interface.name)),
        }
    }
}

/// Brings the network up as the kernel command line says, before `deadline`. Returns the
/// configured interfaces; an error when none could be configured.
pub fn bring_up(cmdline: &str, deadline: Instant, log: &Log) -> Result<Vec<Configured>, Error> {
    let started = Instant::now();
    let (mut params, errors) = cmdline::parse(cmdline);
    for error in errors {
        log.line(&format!("{error}; ignored"));
    }
    if params.ip.is_empty() {
        log.line("no ip= on the command line: DHCP on every Ethernet interface");
        params.ip.push(IpParam::dhcp_everywhere());
    }
    {
        let _step = log.step("network: interface names");
        rename(&params, log)?;
    }
    let mut configured = Vec::new();
    let mut dns = params.nameservers.clone();
    let mut last_error = None;
    for param in &params.ip {
        match bring_up_one(param, deadline, started, log) {
            Ok((done, servers)) => {
                configured.push(done);
                dns.extend(servers);
                dns.extend(&param.dns);
            }
            Err(e) => {
                log.line(&format!("network: {e}"));
                last_error = Some(e);
            }
        }
    }
    if configured.is_empty() {
        return Err(last_error.unwrap_or_else(|| Error::NoInterface("configured".into())));
    }
    if !dns.is_empty() {
        let mut seen = std::collections::HashSet::new();
        dns.retain(|server| seen.insert(*server));
        let text: String = dns.iter().map(|s| format!("nameserver {s}\n")).collect();
        if let Err(e) =
            std::fs::create_dir_all("/etc").and_then(|()| std::fs::write("/etc/resolv.conf", text))
        {
            log.line(&format!("/etc/resolv.conf: {e}"));
        }
    }
    Ok(configured)
}

/// Brings up the interface(s) of one `ip=` parameter; returns the one configured and the DNS
/// servers DHCP gave.
fn bring_up_one(
    param: &IpParam,
    deadline: Instant,
    started: Instant,
    log: &Log,
) -> Result<(Configured, Vec<Ipv4Addr>), Error> {
    let present = interfaces().map_err(interface_error("*", "listing interfaces"))?;
    let candidates: Vec<Interface> = match &param.interface {
        Some(name) => present.into_iter().filter(|i| &i.name == name).collect(),
        None => present,
    };
    if candidates.is_empty() {
        return Err(Error::NoInterface(
            param
                .interface
                .clone()
                .unwrap_or_else(|| "(no Ethernet interface)".into()),
        ));
    }
    let candidates: Vec<Interface> = {
        let _step = log.step("network: link");
        let mut up = Vec::new();
        let mut last = None;
        for interface in candidates {
            match link_up(&interface.name, param) {
                Ok(()) => up.push(interface),
                // One broken NIC must not keep the others from being tried.
                Err(e) => {
                    log.line(&format!("network: {e}"));
                    last = Some(e);
                }
            }
        }
        match (up.is_empty(), last) {
            (true, Some(e)) => return Err(e),
            _ => up,
        }
    };
    let with_carrier = {
        let _step = log.step("network: carrier");
        let first = wait_for_carrier(&candidates, deadline, started)?;
        if first.len() < candidates.len() {
            // Links come up one by one: give the others a moment before choosing.
            std::thread::sleep(
                CARRIER_GRACE.min(deadline.saturating_duration_since(Instant::now())),
            );
            wait_for_carrier(&candidates, deadline, started)?
        } else {
            first
        }
    };
    match &param.method {
        Method::Static {
            address,
            prefix,
            gateway,
        } => {
            let interface = &with_carrier[0].name;
            configure(interface, *address, *prefix, *gateway, log).map(|c| (c, Vec::new()))
        }
        Method::LinkOnly => Ok((
            Configured {
                interface: with_carrier[0].name.clone(),
                address: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: None,
            },
            Vec::new(),
        )),
        Method::Dhcp => {
            let _step = log.step("network: dhcp");
            let mut last = None;
            for (index, interface) in with_carrier.iter().enumerate() {
                // Each interface gets its share of the time left, so that one without a DHCP
                // server does not use it all up.
                let left = deadline.saturating_duration_since(Instant::now());
                let share = left / u32::try_from(with_carrier.len() - index).unwrap_or(1);
                match dhcp::acquire(&interface.name, interface.mac, Instant::now() + share) {
                    Ok(lease) => {
                        log.line(&format!(
                            "{}: DHCP lease {} from {}{}",
                            interface.name,
                            lease.address,
                            lease.server,
                            lease
                                .seconds
                                .map(|s| format!(" for {s} s"))
                                .unwrap_or_default()
                        ));
                        let done = configure(
                            &interface.name,
                            lease.address,
                            lease.prefix,
                            lease.router,
                            log,
                        )?;
                        return Ok((done, lease.dns));
                    }
                    Err(e) => {
                        log.line(&e.to_string());
                        last = Some(e);
                    }
                }
            }
            Err(last.map_or_else(|| Error::NoInterface("with a carrier".into()), Error::Dhcp))
        }
    }
}
