//! Discovery on the local network: the gateway's mDNS announcement of `_clawgate._tcp.local.`
//! (on the bound interface only, withdrawn on shutdown) and the browse behind `clawgate
//! discover`, both through the `mdns-sd` crate.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

use crate::config::{Config, MdnsMode};
use crate::net::BindTarget;

/// The DNS-SD service type the gateway announces.
pub const SERVICE_TYPE: &str = "_clawgate._tcp.local.";

/// The version of the TXT record's keys (`v`).
pub const TXT_VERSION: &str = "2";

/// Whether the configuration asks for an announcement of a gateway bound to `target`.
pub fn mdns_enabled(config: &Config, target: &BindTarget) -> bool {
    match config.discovery.mdns {
        MdnsMode::On => true,
        MdnsMode::Off => false,
        MdnsMode::Auto => match target {
            BindTarget::Lan => true,
            BindTarget::Tailnet => false,
            BindTarget::Addr(ip) => !ip.is_loopback(),
        },
    }
}

/// What is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The instance name (`discovery.name`, default the host name).
    pub name: String,
    /// The port the gateway listens on.
    pub port: u16,
    /// The address it listens on; the announcement goes out on the interface holding it only
    /// (`0.0.0.0`: on every non-loopback IPv4 interface).
    pub addr: IpAddr,
    /// The SHA-256 fingerprint of the TLS certificate (lowercase hex), when the port speaks TLS.
    pub tls_fingerprint: Option<String>,
}

impl Announcement {
    /// The TXT record: `v`, `name`, `port`, `tls` (`0` or `1`) and, with TLS, `fp`.
    pub fn txt(&self) -> Vec<(String, String)> {
        let mut txt = vec![
            ("v".to_string(), TXT_VERSION.to_string()),
            ("name".to_string(), self.name.clone()),
            ("port".to_string(), self.port.to_string()),
            (
                "tls".to_string(),
                if self.tls_fingerprint.is_some() {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
        ];
        if let Some(fp) = &self.tls_fingerprint {
            txt.push(("fp".to_string(), fp.clone()));
        }
        txt
    }
}

/// The mDNS host name of this machine: `<host>.local.`.
pub fn mdns_host_name() -> String {
    format!("{}.local.", crate::net::host_name())
}

/// Why the announcement could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct AnnounceError(String);

/// A running announcement; [`Announcer::stop`] withdraws it.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcer {
    /// Starts the mDNS responder (a thread of its own) and registers the service on the
    /// interface holding the announcement's address only.
    pub fn start(announcement: Announcement) -> Result<Self, AnnounceError> {
        let err = |e: mdns_sd::Error| AnnounceError(e.to_string());
        let daemon = ServiceDaemon::new().map_err(err)?;
        let announcer = Self {
            daemon,
            fullname: String::new(),
        };
        announcer.select_interfaces(&announcement).map_err(err)?;
        let txt = announcement.txt();
        let txt: std::collections::HashMap<String, String> = txt.into_iter().collect();
        let host = mdns_host_name();
        let info = if announcement.addr.is_unspecified() {
            // Every interface's addresses, as the responder finds them.
            ServiceInfo::new(
                SERVICE_TYPE,
                &announcement.name,
                &host,
                (),
                announcement.port,
                txt,
            )
            .map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                &announcement.name,
                &host,
                announcement.addr,
                announcement.port,
                txt,
            )
        }
        .map_err(err)?;
        let fullname = info.get_fullname().to_string();
        announcer.daemon.register(info).map_err(err)?;
        Ok(Self {
            fullname,
            ..announcer
        })
    }

    fn select_interfaces(&self, announcement: &Announcement) -> mdns_sd::Result<()> {
        if announcement.addr.is_unspecified() {
            self.daemon.disable_interface(vec![
                IfKind::IPv6,
                IfKind::LoopbackV4,
                IfKind::LoopbackV6,
            ])?;
            return Ok(());
        }
        // Nothing but the interface holding the bound address (its addresses of that family).
        self.daemon.disable_interface(IfKind::All)?;
        self.daemon
            .enable_interface(IfKind::Addr(announcement.addr))
    }

    /// The registered instance's full name (`<name>._clawgate._tcp.local.`).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the announcement (goodbye packets, sent again 120 ms later by the responder)
    /// and stops the responder once they are out. Blocks for up to about a second.
    pub fn stop(self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname)
            && rx.recv_timeout(Duration::from_millis(500)).is_ok()
        {
            // The responder sends the goodbye once more after 120 ms.
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(Duration::from_millis(500));
        }
    }
}

/// A gateway found by [`browse`], as `clawgate discover` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// Its name (TXT `name`, else the instance name).
    pub name: String,
    /// Its mDNS host name, without the final dot (`box.local`).
    pub host: String,
    /// Its addresses, sorted.
    pub addresses: Vec<String>,
    /// Its port.
    pub port: u16,
    /// Whether it speaks TLS (TXT `tls=1`).
    pub tls: bool,
    /// The certificate fingerprint it announces (TXT `fp`): unverified until pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
}

/// What [`browse`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseEvent {
    /// A gateway, once per instance.
    Found(Found),
    /// A gateway that withdrew its announcement (by instance full name).
    Removed(String),
}

/// Browses `_clawgate._tcp.local.` for `timeout`, calling `on_event` for each gateway found
/// (once per instance) and each withdrawal. Blocking; run it on a thread of its own.
pub fn browse(
    timeout: Duration,
    mut on_event: impl FnMut(BrowseEvent),
) -> Result<(), AnnounceError> {
    let err = |e: mdns_sd::Error| AnnounceError(e.to_string());
    let daemon = ServiceDaemon::new().map_err(err)?;
    let rx = daemon.browse(SERVICE_TYPE).map_err(err)?;
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(service)) => {
                if !seen.insert(service.fullname.clone()) {
                    continue;
                }
                let txt = |key: &str| {
                    service
                        .txt_properties
                        .get_property_val_str(key)
                        .map(str::to_string)
                };
                let mut addresses: Vec<String> = service
                    .addresses
                    .iter()
                    .map(|a| a.to_ip_addr().to_string())
                    .collect();
                addresses.sort();
                let instance = service
                    .fullname
                    .strip_suffix(SERVICE_TYPE)
                    .map(|s| s.trim_end_matches('.').to_string())
                    .unwrap_or_else(|| service.fullname.clone());
                on_event(BrowseEvent::Found(Found {
                    name: txt("name").unwrap_or(instance),
                    host: service.host.trim_end_matches('.').to_string(),
                    addresses,
                    port: service.port,
                    tls: txt("tls").as_deref() == Some("1"),
                    fingerprint_sha256: txt("fp").filter(|f| !f.is_empty()),
                }));
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                seen.remove(&fullname);
                on_event(BrowseEvent::Removed(fullname));
            }
            Ok(_) => {}
            Err(mdns_sd::RecvTimeoutError::Timeout) => break,
            Err(mdns_sd::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_millis(500));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mode: MdnsMode) -> Config {
        let mut config = Config::default();
        config.discovery.mdns = mode;
        config
    }

    #[test]
    fn auto_announces_lan_and_explicit_non_loopback_binds() {
        let auto = with(MdnsMode::Auto);
        let lo = BindTarget::Addr(IpAddr::from([127, 0, 0, 1]));
        let any = BindTarget::Addr(IpAddr::from([0, 0, 0, 0]));
        let one = BindTarget::Addr(IpAddr::from([198, 18, 0, 1]));
        assert!(mdns_enabled(&auto, &BindTarget::Lan));
        assert!(mdns_enabled(&auto, &one));
        assert!(mdns_enabled(&auto, &any));
        assert!(!mdns_enabled(&auto, &BindTarget::Tailnet));
        assert!(!mdns_enabled(&auto, &lo));
        assert!(mdns_enabled(&with(MdnsMode::On), &lo));
        assert!(!mdns_enabled(&with(MdnsMode::Off), &BindTarget::Lan));
    }

    #[test]
    fn txt_has_the_version_name_port_and_tls() {
        let mut a = Announcement {
            name: "box".into(),
            port: 18789,
            addr: IpAddr::from([198, 18, 0, 1]),
            tls_fingerprint: None,
        };
        let pairs = |a: &Announcement| {
            a.txt()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&a), ["v=2", "name=box", "port=18789", "tls=0"]);
        a.tls_fingerprint = Some("ab12".into());
        assert_eq!(
            pairs(&a),
            ["v=2", "name=box", "port=18789", "tls=1", "fp=ab12"]
        );
        assert!(mdns_host_name().ends_with(".local."));
    }

    #[test]
    fn found_serializes_without_a_missing_fingerprint() {
        let found = Found {
            name: "box".into(),
            host: "box.local".into(),
            addresses: vec!["198.18.0.1".into()],
            port: 1,
            tls: false,
            fingerprint_sha256: None,
        };
        let v = serde_json::to_value(&found).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"name": "box", "host": "box.local", "addresses": ["198.18.0.1"], "port": 1, "tls": false})
        );
    }
}
