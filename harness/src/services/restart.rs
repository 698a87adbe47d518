//! Restarting a service while the run goes on: a `restart` step (down and up again at once), or
//! a `power_cycle` step's cut (down until its time, then up).

use super::*;

impl Services {
    /// Stops one service and starts it again as it was, recording both as service events.
    /// iSCSI restarts tgtd (target, LUN and all) behind the login proxy, which stays up: the
    /// guests' connections drop and their logins after the restart are new records.
    pub async fn restart(&self, service: Service) -> Result<String, ServiceError> {
        self.restart_after(service, None).await
    }

    /// Takes `service` down now and starts it again after `gap` (the power cut of a
    /// `power_cycle` step that names it), recorded as an outage: `down until ...`, then
    /// `started`.
    pub async fn down_for(
        &self,
        service: Service,
        gap: std::time::Duration,
        why: &str,
    ) -> Result<String, ServiceError> {
        self.restart_after(service, Some((gap, why))).await
    }

    async fn restart_after(
        &self,
        service: Service,
        gap: Option<(std::time::Duration, &str)>,
    ) -> Result<String, ServiceError> {
        let name = service.name();
        let (stopped, restarted) = match gap {
            None => (
                "stopped (restart step)".to_string(),
                "restarted (restart step)",
            ),
            Some((gap, why)) => (
                format!(
                    "down until {:.0}s ({why})",
                    self.events.clock().now() + gap.as_secs_f64()
                ),
                "started",
            ),
        };
        let gap = gap.map(|(g, _)| g).unwrap_or_default();
        let t = std::time::Instant::now();
        let Again {
            scenario,
            cx,
            ipv6_ra,
        } = &self.again;
        let started = match service {
            Service::Iscsi => {
                let mut iscsi = self.iscsi.lock().await;
                iscsi
                    .restart(scenario, cx, &self.events, &stopped, gap)
                    .instrument(tracing::info_span!("iscsi", restart = true))
                    .await
                    .map(|()| "tgtd restarted behind the login proxy".to_string())
            }
            Service::Http => {
                let mut slot = self.http.lock().await;
                if let Some(old) = slot.take() {
                    old.stop().await;
                }
                self.events.push(service_event(name, &stopped));
                tokio::time::sleep(gap).await;
                http::Http::start(scenario, cx, self.http_addr)
                    .instrument(tracing::info_span!("http", restart = true))
                    .await
                    .map(|h| {
                        *slot = Some(h);
                        format!("HTTP server restarted on {}", self.http_addr)
                    })
            }
            Service::Dhcp => {
                let mut slot = self.dhcp.lock().await;
                match slot.take() {
                    Some(DhcpSlot::Pending { task, run_dir }) if !task.is_finished() => {
                        *slot = Some(DhcpSlot::Pending { task, run_dir });
                        return Err(ServiceError::Setup {
                            service: SERVICE_DHCP,
                            message:
                                "dnsmasq has not started yet (start_after): nothing to restart"
                                    .into(),
                        });
                    }
                    Some(old) => old.stop().await,
                    None => {}
                }
                self.events.push(service_event(name, &stopped));
                tokio::time::sleep(gap).await;
                dhcp::Dhcp::start(scenario, cx, *ipv6_ra)
                    .instrument(tracing::info_span!("dhcp", restart = true))
                    .await
                    .map(|d| {
                        *slot = Some(DhcpSlot::Running(Box::new(d)));
                        "dnsmasq restarted with its leases".to_string()
                    })
            }
        };
        match started {
            Ok(what) => {
                self.events.push(service_event(name, restarted));
                Ok(format!("{what} in {:.1}s", t.elapsed().as_secs_f64()))
            }
            Err(e) => {
                self.events.push(service_event(name, &failed(&e)));
                Err(e)
            }
        }
    }
}
