//! The lab's iSCSI portals: the login proxy on each, in front of the one tgtd, and the death of
//! one (a `portal_down` step).

use std::net::{Ipv4Addr, SocketAddr};

use super::events::{EventKind, EventLog};
use super::iscsi::{Iscsi, PORTAL_PORT, SERVICE};
use super::iscsi_proxy::{IscsiProxy, LoginFaults};
use super::{ServiceContext, ServiceError};
use crate::scenario::Scenario;

impl Iscsi {
    /// The login proxy in front of tgtd, which records the logins; without one, tgtd already
    /// holds the portal and nothing records them.
    ///
    /// A second portal is a second proxy in front of the same tgtd, on the lab's second address,
    /// with its own outage plan (the ACL and login faults are the target's, so shared): one
    /// target server with two portals, as an HA pair's two controllers present one LUN. Two
    /// tgtds on one backing file would be two targets that do not know of each other's writes.
    pub(super) async fn start_proxy(
        &mut self,
        s: &Scenario,
        cx: &ServiceContext,
        login_proxy: Option<LoginFaults>,
    ) -> Result<(), ServiceError> {
        let Some(faults) = login_proxy else {
            if s.iscsi.second_portal.is_some() {
                return Err(ServiceError::Setup {
                    service: SERVICE,
                    message: "a second portal needs the login proxy (not in bench's bare arm)"
                        .into(),
                });
            }
            return Ok(());
        };
        let io = |what: String| {
            move |source| ServiceError::Io {
                service: SERVICE,
                what,
                source,
            }
        };
        let sink =
            std::fs::File::create(&self.logins).map_err(io(self.logins.display().to_string()))?;
        let sink = std::sync::Arc::new(std::sync::Mutex::new(sink));
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, PORTAL_PORT));
        let portals = s.iscsi.portals(cx.server_ip);
        let two = portals.len() > 1;
        for (portal, address) in portals {
            // The ACL and login faults are the target's; each portal has its own outages.
            let mut faults = faults.clone();
            if let (crate::scenario::Portal::Second, Some(p)) = (portal, &s.iscsi.second_portal) {
                faults.downtime = crate::services::outage::Downtime::new(p.start_after, &p.down);
            }
            let listen = SocketAddr::from((address, PORTAL_PORT));
            let name = two.then_some(portal);
            let proxy = IscsiProxy::start(
                listen,
                upstream,
                faults,
                cx.events.clone(),
                sink.clone(),
                name,
            )
            .await
            .map_err(io(format!("login proxy on {listen}")))?;
            self.proxies.push((portal, proxy));
        }
        Ok(())
    }

    /// The `which` portal dies (a `portal_down` step): see [`IscsiProxy::kill`]. Recorded as
    /// the iSCSI service's state.
    pub fn portal_down(
        &self,
        which: crate::scenario::Portal,
        events: &EventLog,
    ) -> Result<String, ServiceError> {
        let Some((_, proxy)) = self.proxies.iter().find(|(p, _)| *p == which) else {
            return Err(ServiceError::Setup {
                service: SERVICE,
                message: format!("the lab has no {} portal", which.name()),
            });
        };
        let cut = proxy.kill();
        let what = format!(
            "portal {} down for good ({} portal, portal_down step): {cut} connection(s) cut",
            proxy.listen,
            which.name()
        );
        events.push(EventKind::Service {
            service: SERVICE.into(),
            state: what.clone(),
        });
        Ok(what)
    }
}
