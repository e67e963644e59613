//! Where the gateway listens: the names `gateway.bind` takes besides an address (`loopback`,
//! `lan`, `tailnet`), resolved to an IPv4 address of this host's interfaces, and the host name
//! (for the gateway's own origins and its mDNS announcement).
//!
//! The selection itself ([`select_lan`], [`select_tailnet`]) works on plain data (the routes of
//! `/proc/net/route`, the interfaces' addresses) so that it is tested on fixtures; only
//! [`resolve`] reads the machine.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

/// What `gateway.bind` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindTarget {
    /// One address (`localhost` and `loopback` are 127.0.0.1).
    Addr(IpAddr),
    /// The IPv4 address of the interface holding the default route.
    Lan,
    /// The 100.64.0.0/10 address of a `tailscale*` interface.
    Tailnet,
}

impl BindTarget {
    /// Parses `gateway.bind`: an IP address (optionally in brackets), `localhost`, `loopback`,
    /// `lan` or `tailnet` (names case-insensitive); `None` for anything else.
    pub fn parse(bind: &str) -> Option<Self> {
        let lower = bind.trim().to_ascii_lowercase();
        match lower.as_str() {
            "localhost" | "loopback" => Some(Self::Addr(IpAddr::from(Ipv4Addr::LOCALHOST))),
            "lan" => Some(Self::Lan),
            "tailnet" => Some(Self::Tailnet),
            _ => lower
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .ok()
                .map(Self::Addr),
        }
    }

    /// Whether it names a loopback address (only those may go without token auth).
    pub fn is_loopback(&self) -> bool {
        matches!(self, Self::Addr(ip) if ip.is_loopback())
    }

    /// What a failed lookup looked for, for the message that stops the gateway.
    pub fn looked_for(&self) -> String {
        match self {
            Self::Addr(ip) => format!("the address {ip}"),
            Self::Lan => format!(
                "no IPv4 address on the interface holding the default route (read from /proc/net/route; interfaces named {} are skipped)",
                SKIPPED_PREFIXES
                    .iter()
                    .map(|p| format!("{p}*"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Tailnet => {
                "no IPv4 address on an interface named tailscale* in 100.64.0.0/10".to_string()
            }
        }
    }
}

/// Interfaces that never hold the `lan` address: containers' and VMs' bridges and pairs.
pub const SKIPPED_PREFIXES: &[&str] = &["docker", "br-", "veth", "virbr"];

/// Whether `lan` skips the interface `name`.
pub fn is_skipped_interface(name: &str) -> bool {
    SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One IPv4 address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The interface's name (`eth0`, `tailscale0`).
    pub name: String,
    /// The address.
    pub ip: Ipv4Addr,
}

/// One line of `/proc/net/route`, the fields [`select_lan`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface.
    pub interface: String,
    /// The destination network.
    pub destination: Ipv4Addr,
    /// The destination's mask.
    pub mask: Ipv4Addr,
    /// The `RTF_*` flags (`RTF_UP` is 1).
    pub flags: u32,
    /// Lower is preferred.
    pub metric: u32,
}

impl Route {
    /// Whether it is a default route that is up.
    pub fn is_default(&self) -> bool {
        self.destination.is_unspecified() && self.mask.is_unspecified() && self.flags & 1 == 1
    }
}

/// Parses the text of `/proc/net/route` (a header line, then one route per line, addresses as
/// hex in the kernel's byte order); lines that do not parse are left out.
pub fn parse_routes(text: &str) -> Vec<Route> {
    let hex_addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|n| Ipv4Addr::from(n.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            Some(Route {
                interface: fields[0].to_string(),
                destination: hex_addr(fields[1])?,
                flags: u32::from_str_radix(fields[3], 16).ok()?,
                metric: fields[6].parse().ok()?,
                mask: hex_addr(fields[7])?,
            })
        })
        .collect()
}

/// The `lan` address: of the default routes (lowest metric first) whose interface is not
/// skipped and has an IPv4 address, the first such address; `None` when there is none.
pub fn select_lan(routes: &[Route], addrs: &[InterfaceAddr]) -> Option<InterfaceAddr> {
    let mut defaults: Vec<&Route> = routes
        .iter()
        .filter(|r| r.is_default() && !is_skipped_interface(&r.interface))
        .collect();
    defaults.sort_by_key(|r| r.metric);
    defaults.iter().find_map(|route| {
        addrs
            .iter()
            .find(|a| a.name == route.interface && !a.ip.is_loopback() && !a.ip.is_link_local())
            .cloned()
    })
}

/// Whether `ip` is in 100.64.0.0/10 (the shared address space Tailscale assigns from).
pub fn is_cgnat(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (b & 0xc0) == 64
}

/// The `tailnet` address: the first 100.64.0.0/10 address of an interface named `tailscale*`.
pub fn select_tailnet(addrs: &[InterfaceAddr]) -> Option<InterfaceAddr> {
    addrs
        .iter()
        .find(|a| a.name.starts_with("tailscale") && is_cgnat(a.ip))
        .cloned()
}

/// The IPv4 addresses of this host's interfaces, in the order the OS lists them.
pub fn interface_addrs() -> std::io::Result<Vec<InterfaceAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => Some(InterfaceAddr {
                name: i.name,
                ip: v4.ip,
            }),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect())
}

/// The interface holding `ip`, if any (for an explicit address).
pub fn interface_of(ip: IpAddr) -> Option<String> {
    let IpAddr::V4(v4) = ip else {
        return None;
    };
    interface_addrs()
        .ok()?
        .into_iter()
        .find(|a| a.ip == v4)
        .map(|a| a.name)
}

/// A resolved bind: the address to listen on and the interface that holds it (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The address.
    pub ip: IpAddr,
    /// The interface holding it; `None` for an explicit address not found on one (such as
    /// `0.0.0.0`).
    pub interface: Option<String>,
}

/// Resolves `target` on this machine now; `None` when `lan` or `tailnet` finds no address.
pub fn resolve(target: &BindTarget) -> Option<Resolved> {
    match target {
        BindTarget::Addr(ip) => Some(Resolved {
            ip: *ip,
            interface: interface_of(*ip),
        }),
        BindTarget::Lan => {
            let routes = std::fs::read_to_string("/proc/net/route").ok()?;
            let found = select_lan(&parse_routes(&routes), &interface_addrs().ok()?)?;
            Some(Resolved {
                ip: IpAddr::V4(found.ip),
                interface: Some(found.name),
            })
        }
        BindTarget::Tailnet => {
            let found = select_tailnet(&interface_addrs().ok()?)?;
            Some(Resolved {
                ip: IpAddr::V4(found.ip),
                interface: Some(found.name),
            })
        }
    }
}

/// Resolves `target`, trying again every 100 ms for up to `wait` while `lan` or `tailnet`
/// finds no address; `None` when there is still none then.
pub async fn resolve_within(target: &BindTarget, wait: std::time::Duration) -> Option<Resolved> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(found) = resolve(target) {
            return Some(found);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep((deadline - now).min(std::time::Duration::from_millis(100))).await;
    }
}

/// This host's name (the first label, as `gethostname` gives it, else
/// `/proc/sys/kernel/hostname`, else `localhost`), read once.
pub fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
        // when it fits, and we stop at the first NUL or at the end either way.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let from_libc = (rc == 0)
            .then(|| {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..end]).into_owned()
            })
            .filter(|s| !s.trim().is_empty());
        let name = from_libc
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        name.split('.').next().unwrap_or("localhost").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        docker0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        veth12\t00000000\t010212C6\t0003\t0\t0\t50\t00000000\t0\t0\t0\n\
        wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
        eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
        eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
        down0\t00000000\t0100000A\t0002\t0\t0\t1\t00000000\t0\t0\t0\n\
        garbage line\n";

    fn addr(name: &str, ip: [u8; 4]) -> InterfaceAddr {
        InterfaceAddr {
            name: name.into(),
            ip: Ipv4Addr::from(ip),
        }
    }

    #[test]
    fn parses_proc_net_route() {
        let routes = parse_routes(ROUTES);
        assert_eq!(routes.len(), 6, "{routes:?}");
        let eth0 = &routes[3];
        assert_eq!(eth0.interface, "eth0");
        assert!(eth0.is_default());
        assert_eq!(eth0.metric, 100);
        let subnet = &routes[4];
        assert!(!subnet.is_default());
        if cfg!(target_endian = "little") {
            assert_eq!(subnet.destination, Ipv4Addr::new(10, 0, 0, 0));
            assert_eq!(subnet.mask, Ipv4Addr::new(255, 255, 255, 0));
        }
        assert!(!routes[5].is_default(), "a route that is not up");
        assert!(parse_routes("").is_empty());
    }

    #[test]
    fn lan_takes_the_best_default_route_with_an_address() {
        let routes = parse_routes(ROUTES);
        let addrs = vec![
            addr("lo", [127, 0, 0, 1]),
            addr("docker0", [172, 17, 0, 1]),
            addr("veth12", [198, 18, 2, 1]),
            addr("wlan0", [192, 168, 1, 20]),
            addr("eth0", [10, 0, 0, 7]),
            addr("down0", [10, 9, 9, 9]),
        ];
        // docker0 (metric 0) and veth12 (50) are skipped; eth0 (100) beats wlan0 (600).
        assert_eq!(
            select_lan(&routes, &addrs),
            Some(addr("eth0", [10, 0, 0, 7]))
        );
        // Without an address on eth0, the next default route.
        let no_eth0: Vec<_> = addrs.iter().filter(|a| a.name != "eth0").cloned().collect();
        assert_eq!(
            select_lan(&routes, &no_eth0),
            Some(addr("wlan0", [192, 168, 1, 20]))
        );
        // Only skipped interfaces: nothing.
        let skipped: Vec<_> = addrs
            .iter()
            .filter(|a| is_skipped_interface(&a.name))
            .cloned()
            .collect();
        assert_eq!(select_lan(&routes, &skipped), None);
        assert_eq!(select_lan(&[], &addrs), None);
        for name in ["docker0", "br-1a2b", "veth0", "virbr0"] {
            assert!(is_skipped_interface(name), "{name}");
        }
        for name in ["eth0", "wlan0", "bridge0", "enp3s0"] {
            assert!(!is_skipped_interface(name), "{name}");
        }
    }

    #[test]
    fn tailnet_takes_a_cgnat_address_of_a_tailscale_interface() {
        let addrs = vec![
            addr("eth0", [100, 64, 0, 5]),
            addr("tailscale0", [10, 1, 1, 1]),
            addr("tailscale0", [100, 101, 2, 3]),
        ];
        assert_eq!(
            select_tailnet(&addrs),
            Some(addr("tailscale0", [100, 101, 2, 3]))
        );
        assert_eq!(select_tailnet(&addrs[..2]), None);
        assert!(is_cgnat(Ipv4Addr::new(100, 64, 0, 0)));
        assert!(is_cgnat(Ipv4Addr::new(100, 127, 255, 255)));
        assert!(!is_cgnat(Ipv4Addr::new(100, 128, 0, 0)));
        assert!(!is_cgnat(Ipv4Addr::new(100, 63, 255, 255)));
    }

    #[test]
    fn parses_bind_names() {
        let lo = BindTarget::Addr(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(BindTarget::parse("loopback"), Some(lo));
        assert_eq!(BindTarget::parse("LOCALHOST"), Some(lo));
        assert_eq!(BindTarget::parse("lan"), Some(BindTarget::Lan));
        assert_eq!(BindTarget::parse("Tailnet"), Some(BindTarget::Tailnet));
        assert_eq!(
            BindTarget::parse("[::1]"),
            Some(BindTarget::Addr("::1".parse().expect("ip")))
        );
        assert_eq!(BindTarget::parse("wifi"), None);
        assert!(lo.is_loopback());
        assert!(!BindTarget::Lan.is_loopback());
        assert!(!BindTarget::Tailnet.is_loopback());
        assert!(
            BindTarget::Tailnet
                .looked_for()
                .contains("no IPv4 address on an interface named tailscale* in 100.64.0.0/10")
        );
        assert!(!host_name().is_empty());
        assert!(!host_name().contains('.'));
    }
}
