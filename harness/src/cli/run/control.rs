//! What the steps may do to a run's lab (restart a service, kill a portal, act on a node's
//! machine), and how they learn that the lab broke.

use std::path::PathBuf;

use super::power::Power;
use crate::expect;
use crate::scenario;
use crate::services::Services;

/// What the steps may do to this run's lab, and how they learn that it broke: a service died
/// or a harness task panicked.
pub(super) struct RunControl<'a> {
    pub(super) services: &'a Services,
    /// Each node's QEMU, QMP connection and console, which a power cycle replaces.
    pub(super) power: &'a Power<'a>,
}

impl expect::LabControl for RunControl<'_> {
    fn restart(
        &self,
        service: scenario::Service,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(async move {
            self.services
                .restart(service)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn add_dhcp_host(
        &self,
        host: scenario::DhcpHost,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(async move {
            self.services
                .add_dhcp_host(&host)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn lun_file(&self, node: &str) -> Option<PathBuf> {
        Some(self.services.lun_file(node).to_path_buf())
    }

    fn portal_down(
        &self,
        which: scenario::Portal,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        Box::pin(async move {
            self.services
                .portal_down(which)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn machine(
        &self,
        node: &str,
        action: &scenario::MachineAction,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>>
    {
        let action = action.clone();
        let node = node.to_string();
        Box::pin(async move {
            let action = match action {
                scenario::MachineAction::Qmp(a) => a,
                scenario::MachineAction::PowerCycle { off_for, services } => {
                    // The node and the services it names go down together; each comes back on its
                    // own time, and the step is met once all are back.
                    let downs = services.iter().map(|(svc, back)| async move {
                        self.services
                            .down_for(*svc, *back, "power cut")
                            .await
                            .map_err(|e| format!("{}: {e}", svc.name()))
                    });
                    let (node_back, services_back) = tokio::join!(
                        self.power.cycle(&node, off_for),
                        futures::future::join_all(downs)
                    );
                    let mut done = vec![node_back?];
                    for s in services_back {
                        done.push(s?);
                    }
                    return Ok(done.join("; "));
                }
            };
            let qmp = self
                .power
                .machines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&node)
                .cloned()
                .ok_or_else(|| format!("no QMP connection to {node}'s machine"))?;
            let nic = match &action {
                scenario::QmpAction::Link { mac, .. } => self
                    .power
                    .configs
                    .get(&node)
                    .and_then(|cfg| cfg.netdev_of(*mac)),
                _ => None,
            };
            qmp.act(&action, nic.as_deref()).await
        })
    }

    fn broken(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = expect::LabFault> + Send + '_>> {
        Box::pin(async move {
            tokio::select! {
                p = crate::support::tasks::panicked() => expect::LabFault::Panic(p),
                died = self.services.died() => expect::LabFault::Died(died),
            }
        })
    }
}
