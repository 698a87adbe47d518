//! `services:`: the DHCP hosts and boot URL, the HTTP files and faults, the iSCSI target
//! (LUN, faults, ACL), and each service's late start and `down` windows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{one_of, render, Folder, ScenarioError, Validator, MAX_FAULTS};
use crate::scenario::raw::{RawDownWindow, RawScenario};
use crate::scenario::values::shown;
use crate::scenario::{
    windows, Dhcp, DhcpHost, DownWindow, Http, HttpFault, HttpFile, Iscsi, Node, SecondPortal,
    Segment, Subnet,
};

const MAX_HTTP_DELAY: Duration = Duration::from_secs(300);
/// All HTTP files together: the server holds them in memory for the whole run, and a list of
/// many names for one big file must not multiply it.
const MAX_HTTP_TOTAL: u64 = 64 * 1024 * 1024;

impl Validator<'_> {
    pub(super) fn dhcp(
        &self,
        raw: &RawScenario,
        subnet: &Subnet,
        nodes: &[Node],
        vars: &BTreeMap<String, String>,
    ) -> Result<Dhcp, ScenarioError> {
        let mut hosts = Vec::new();
        let mut seen = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let known: BTreeSet<_> = nodes
            .iter()
            .flat_map(|n| n.nics.iter().map(|x| x.mac))
            .collect();
        for h in &raw.services.dhcp.hosts {
            if !seen.insert(h.mac.value) {
                return Err(self.at(
                    &h.mac,
                    format!("DHCP host {} is listed twice", h.mac.value),
                    None,
                ));
            }
            if !known.contains(&h.mac.value) {
                return Err(self.at(
                    &h.mac,
                    format!("DHCP host {} is not a NIC of any node", h.mac.value),
                    Some(one_of(
                        known
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .iter()
                            .map(String::as_str),
                    )),
                ));
            }
            if let Some(hn) = &h.hostname {
                let ok = !hn.value.is_empty()
                    && hn.value.len() <= 63
                    && hn
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !hn.value.starts_with('-');
                if !ok {
                    return Err(self.at(
                        hn,
                        format!("`{}` is not a valid host name", shown(&hn.value)),
                        None,
                    ));
                }
            }
            let on_segment = nodes
                .iter()
                .flat_map(|n| n.nics.iter())
                .any(|x| x.mac == h.mac.value && x.segment.is_some());
            if let (Some(ip), true) = (&h.ip, on_segment) {
                return Err(self.at(
                    ip,
                    format!(
                        "{} is on a segment: static addresses are for the boot network",
                        h.mac.value
                    ),
                    Some(
                        "leave out `ip`; the segment's DHCP gives an address from its pool".into(),
                    ),
                ));
            }
            if let Some(ip) = &h.ip {
                let (lo, _) = subnet.pool();
                if !subnet.contains(ip.value) || ip.value == subnet.server() || ip.value >= lo {
                    return Err(self.at(
                        ip,
                        format!("{} is not a free static address in {subnet}", ip.value),
                        Some(format!(
                            "use {}..{}: {} is the harness, {lo} and up the dynamic pool",
                            subnet.host(2),
                            subnet.host(subnet.size() / 2 - 1),
                            subnet.server()
                        )),
                    ));
                }
                if !ips.insert(ip.value) {
                    return Err(self.at(ip, format!("{} is given to two hosts", ip.value), None));
                }
            }
            hosts.push(DhcpHost {
                mac: h.mac.value,
                hostname: h.hostname.as_ref().map(|s| s.value.clone()),
                ip: h.ip.as_ref().map(|s| s.value),
            });
        }
        let boot_url = match &raw.services.dhcp.boot_url {
            Some(u) => {
                let url = render(&u.value, vars)
                    .map_err(|m| self.at(u, m, Some(one_of(vars.keys().map(String::as_str)))))?;
                // dnsmasq takes the URL as a field of `--dhcp-boot=tag,file,server,...`: a
                // comma would start another field, and a blank or control character is no URL.
                if let Some(c) = url
                    .chars()
                    .find(|c| *c == ',' || c.is_whitespace() || c.is_control())
                {
                    return Err(self.at(
                        u,
                        format!(
                            "boot URL `{}` has {}, which dnsmasq cannot pass on",
                            shown(&url),
                            shown(&format!("{c:?}"))
                        ),
                        Some("percent-encode it (`%2C`, `%20`)".into()),
                    ));
                }
                url
            }
            None => format!("http://{}/boot.ipxe", subnet.server()),
        };
        let start_after = raw.services.dhcp.start_after.map(|d| d.0);
        Ok(Dhcp {
            hosts,
            boot_url,
            start_after,
            down: self.down_windows(&raw.services.dhcp.down, start_after)?,
            known_only: raw.services.dhcp.known_only,
            ipxe_fast_dhcp: raw.services.dhcp.ipxe_fast_dhcp.unwrap_or(true),
        })
    }

    /// `hosts/<name>.ipxe` is a per-host file (the exceptions to a fleet's one menu, fetched as
    /// `hosts/${hostname}.ipxe`): one that names no node nor DHCP host name is never fetched,
    /// which in the field is a node silently booting the defaults. `hosts/mac-...` files go by MAC.
    fn host_file_names_a_node(
        &self,
        raw: &RawScenario,
        url: &str,
        src: &Spanned<String>,
    ) -> Result<(), ScenarioError> {
        let Some(name) = url
            .strip_prefix("hosts/")
            .and_then(|n| n.strip_suffix(".ipxe"))
            .filter(|n| !n.contains('/') && !n.starts_with("mac-"))
        else {
            return Ok(());
        };
        let mut known: Vec<&str> = raw
            .nodes
            .iter()
            .flat_map(|l| l.value.iter())
            .map(|n| n.name.value.as_str())
            .collect();
        for h in &raw.services.dhcp.hosts {
            if let Some(n) = &h.hostname {
                if !known.contains(&n.value.as_str()) {
                    known.push(n.value.as_str());
                }
            }
        }
        if known.contains(&name) {
            return Ok(());
        }
        Err(self.at(
            src,
            format!(
                "per-host file `{}` names no node: no node or DHCP host is called `{}`",
                shown(url),
                shown(name)
            ),
            Some(format!(
                "a node fetches hosts/${{hostname}}.ipxe; known names: {}",
                one_of(known.into_iter())
            )),
        ))
    }

    pub(super) fn http(
        &self,
        raw: &RawScenario,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
    ) -> Result<Http, ScenarioError> {
        let mut files = Vec::new();
        let mut total: u64 = 0;
        for (url, src) in &raw.services.http.files {
            let url_ok = !url.is_empty()
                && url
                    .split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
            if !url_ok {
                return Err(self.at(
                    src,
                    format!("`{}` is not a usable URL path", shown(url)),
                    Some("use a relative path like `boot.ipxe` or `menus/node01.ipxe`".into()),
                ));
            }
            self.host_file_names_a_node(raw, url, src)?;
            let (full, body) = self.template(src, folder, vars, "HTTP file")?;
            total += body.len() as u64;
            if total > MAX_HTTP_TOTAL {
                return Err(self.at(
                    src,
                    format!(
                        "the HTTP files add up to more than {} MiB",
                        MAX_HTTP_TOTAL / 1024 / 1024
                    ),
                    Some("the server keeps every file in memory for the whole run".into()),
                ));
            }
            files.push(HttpFile {
                url_path: url.clone(),
                source: full,
                body,
            });
        }
        let mut faults = Vec::new();
        for f in &raw.services.http.faults {
            let path = if f.value.path.starts_with('/') {
                f.value.path.clone()
            } else {
                format!("/{}", f.value.path)
            };
            if !files.iter().any(|x| format!("/{}", x.url_path) == path) {
                return Err(self.at(
                    f,
                    format!(
                        "fault for `{}`, which is not one of the HTTP files",
                        shown(&path)
                    ),
                    Some(one_of(files.iter().map(|x| x.url_path.as_str()))),
                ));
            }
            // Without a delay, a fault is an error status; 503 unless the scenario says.
            let status = match (f.value.status, f.value.delay) {
                (Some(s), _) => Some(s),
                (None, None) => Some(503),
                (None, Some(_)) => None,
            };
            if let Some(status) = status.filter(|s| !(400..=599).contains(s)) {
                return Err(self.at(
                    f,
                    format!("status {status} is not an error (400..=599)"),
                    None,
                ));
            }
            if f.value.fail_first == 0 || f.value.fail_first > MAX_FAULTS {
                return Err(self.at(f, format!("fail_first must be 1..={MAX_FAULTS}"), None));
            }
            if f.value.delay.is_some_and(|d| d.0 > MAX_HTTP_DELAY) {
                return Err(self.at(
                    f,
                    format!("delay longer than {MAX_HTTP_DELAY:?}: iPXE would give up first"),
                    None,
                ));
            }
            faults.push(HttpFault {
                path,
                first: f.value.fail_first,
                status,
                delay: f.value.delay.map(|d| d.0),
            });
        }
        let start_after = raw.services.http.start_after.map(|d| d.0);
        Ok(Http {
            files,
            faults,
            start_after,
            down: self.down_windows(&raw.services.http.down, start_after)?,
        })
    }

    pub(super) fn iscsi(
        &self,
        raw: &RawScenario,
        subnet: &Subnet,
        segments: &[Segment],
        dhcp: &Dhcp,
    ) -> Result<Iscsi, ScenarioError> {
        let lun = match &raw.services.iscsi.lun {
            Some(l) if l.value == 0 => {
                return Err(self.at(
                    l,
                    "LUN 0 is tgtd's controller; the disk must be LUN 1 or higher",
                    None,
                ))
            }
            Some(l) => l.value,
            None => 1,
        };
        let faults = raw.services.iscsi.faults.as_ref();
        if let Some(f) = faults {
            // Each alone can be near u32::MAX: add without wrapping.
            if u64::from(f.value.refuse_first) + u64::from(f.value.drop_first)
                > u64::from(MAX_FAULTS)
            {
                return Err(self.at(
                    f,
                    format!("more than {MAX_FAULTS} faulty logins: no boot waits that long"),
                    None,
                ));
            }
        }
        let start_after = raw.services.iscsi.start_after.map(|d| d.0);
        let refuse_until = faults.and_then(|f| f.value.refuse_until.map(|d| d.0));
        if let (Some(f), Some(until)) = (faults, refuse_until) {
            if let Some(start) = start_after.filter(|s| until <= *s) {
                return Err(self.at(
                    f,
                    format!(
                        "refuse_until {} ends before the target starts (start_after: {}): it would refuse nothing",
                        humantime::format_duration(until),
                        humantime::format_duration(start)
                    ),
                    Some("make refuse_until later than start_after, or leave it out".into()),
                ));
            }
        }
        let (target, per_node) = self.targets(raw)?;
        let iscsi = Iscsi {
            target,
            per_node,
            lun,
            refuse_first: faults.map(|f| f.value.refuse_first).unwrap_or(0),
            drop_first: faults.map(|f| f.value.drop_first).unwrap_or(0),
            refuse_until,
            start_after,
            down: self.down_windows(&raw.services.iscsi.down, start_after)?,
            allow_initiators: Vec::new(),
            allow_addresses: Vec::new(),
            second_portal: self.second_portal(raw, subnet, dhcp)?,
        };
        let mut iscsi = iscsi;
        if let Some(acl) = &raw.services.iscsi.acl {
            if acl.value.initiators.is_empty() && acl.value.addresses.is_empty() {
                return Err(self.at(
                    acl,
                    "an empty `acl` would let nobody log in",
                    Some(
                        "list `initiators`, `addresses` or both; leave `acl` out to allow all"
                            .into(),
                    ),
                ));
            }
            if let Some(a) =
                acl.value.addresses.iter().find(|a| {
                    !subnet.contains(**a) && !segments.iter().any(|g| g.subnet.contains(**a))
                })
            {
                return Err(self.at(
                    acl,
                    format!("ACL address {a} is on no network of the lab"),
                    Some(format!("the boot network is {subnet}")),
                ));
            }
            iscsi.allow_initiators = acl.value.initiators.clone();
            iscsi.allow_addresses = acl.value.addresses.clone();
        }
        Ok(iscsi)
    }

    /// The second portal's address: a free static address of the boot network, which the lab
    /// puts on its bridge beside its own.
    fn second_portal(
        &self,
        raw: &RawScenario,
        subnet: &Subnet,
        dhcp: &Dhcp,
    ) -> Result<Option<SecondPortal>, ScenarioError> {
        let Some(p) = &raw.services.iscsi.second_portal else {
            return Ok(None);
        };
        let address = &p.value.address;
        let (lo, _) = subnet.pool();
        let a = address.value;
        if !subnet.contains(a) || a == subnet.server() || a >= lo || a == subnet.network {
            return Err(self.at(
                address,
                format!("{a} is not a free static address in {subnet}"),
                Some(format!(
                    "use {}..{}: {} is the harness's first portal, {lo} and up the dynamic pool",
                    subnet.host(2),
                    subnet.host(subnet.size() / 2 - 1),
                    subnet.server()
                )),
            ));
        }
        if let Some(h) = dhcp.hosts.iter().find(|h| h.ip == Some(a)) {
            return Err(self.at(
                address,
                format!("{a} is DHCP host {}'s address", h.mac),
                Some("give the second portal an address no node has".into()),
            ));
        }
        let start_after = p.value.start_after.map(|d| d.0);
        Ok(Some(SecondPortal {
            address: a,
            start_after,
            down: self.down_windows(&p.value.down, start_after)?,
        }))
    }

    /// A service's `down` windows, in time order, each after its late start.
    fn down_windows(
        &self,
        written: &[Spanned<RawDownWindow>],
        start_after: Option<Duration>,
    ) -> Result<Vec<DownWindow>, ScenarioError> {
        let pairs: Vec<(Duration, Duration)> = written
            .iter()
            .map(|w| (w.value.at.0, w.value.length.0))
            .collect();
        windows::check(&pairs, start_after)
            .map_err(|e| self.at(&written[e.index], e.message, e.help))
    }
}
