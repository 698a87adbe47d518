//! `network:`: the boot network's subnet and the extra `segments`.

use super::{ScenarioError, Validator, BOOT_SEGMENT};
use crate::scenario::raw::RawScenario;
use crate::scenario::{Segment, Subnet};

const MAX_SEGMENTS: usize = 4;

/// The boot network: `network.subnet`, or 10.77.0.0/24.
pub(super) fn boot_subnet(raw: &RawScenario) -> Subnet {
    raw.network
        .subnet
        .unwrap_or_else(|| "10.77.0.0/24".parse().expect("default subnet is valid"))
}

impl Validator<'_> {
    pub(super) fn segments(
        &self,
        raw: &RawScenario,
        subnet: &Subnet,
    ) -> Result<Vec<Segment>, ScenarioError> {
        let mut out: Vec<Segment> = Vec::new();
        if raw.network.segments.len() > MAX_SEGMENTS {
            return Err(self.at(
                &raw.network.segments[MAX_SEGMENTS],
                format!("more than {MAX_SEGMENTS} segments"),
                None,
            ));
        }
        for sg in &raw.network.segments {
            let name = &sg.value.name;
            let ok = !name.is_empty()
                && name.len() <= 16
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.at(
                    sg,
                    format!("segment name `{name}` is not valid"),
                    Some("use 1-16 letters, digits, '-' and '_'".into()),
                ));
            }
            if name == BOOT_SEGMENT || out.iter().any(|g| &g.name == name) {
                return Err(self.at(
                    sg,
                    format!("segment name `{name}` is taken"),
                    Some(format!("`{BOOT_SEGMENT}` names the boot network")),
                ));
            }
            let net = sg.value.subnet;
            if let Some(other) = std::iter::once((BOOT_SEGMENT, subnet))
                .chain(out.iter().map(|g| (g.name.as_str(), &g.subnet)))
                .find(|(_, s)| s.overlaps(&net))
            {
                return Err(self.at(
                    sg,
                    format!(
                        "segment `{name}` ({net}) overlaps `{}` ({})",
                        other.0, other.1
                    ),
                    Some("each segment needs its own subnet".into()),
                ));
            }
            out.push(Segment {
                name: name.clone(),
                subnet: net,
                dhcp: sg.value.dhcp,
            });
        }
        Ok(out)
    }
}
