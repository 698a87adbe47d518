//! `vars:` and the harness's own variables, and the files that use them: HTTP files and
//! embedded iPXE scripts, read from the scenario's folder with their `{{variables}}` filled.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_saphyr::Spanned;

use super::{one_of, render, Folder, ScenarioError, Validator};
use crate::scenario::raw::RawScenario;
use crate::scenario::values::shown;
use crate::scenario::Subnet;

const MAX_HTTP_FILE: u64 = 16 * 1024 * 1024;

impl Validator<'_> {
    /// The harness's own variables and the scenario's `vars`, which may not replace them.
    pub(super) fn vars(
        &self,
        raw: &RawScenario,
        subnet: &Subnet,
    ) -> Result<BTreeMap<String, String>, ScenarioError> {
        let mut vars = builtin_vars(subnet, raw);
        for (k, v) in &raw.vars {
            if vars.contains_key(k) {
                return Err(self.at(
                    v,
                    format!(
                        "`vars.{}` would replace the harness's own variable",
                        shown(k)
                    ),
                    Some(format!(
                        "harness variables: {}",
                        one_of(vars.keys().map(String::as_str))
                    )),
                ));
            }
            vars.insert(k.clone(), v.value.clone());
        }
        Ok(vars)
    }

    /// Reads a file the harness serves or hands to a guest: it must stay inside the scenario's
    /// folder (links included), be a regular file of bounded size, and its `{{variables}}` must
    /// all be known. Binary files are taken as they are.
    pub(super) fn template(
        &self,
        src: &Spanned<String>,
        folder: &Folder,
        vars: &BTreeMap<String, String>,
        what: &str,
    ) -> Result<(PathBuf, Vec<u8>), ScenarioError> {
        let rel = Path::new(&src.value);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(self.at(
                src,
                format!("`{}` leaves the scenario's folder", shown(&src.value)),
                Some(format!(
                    "{what}s must live in or below the folder of the scenario file"
                )),
            ));
        }
        let full = folder.dir.join(rel);
        let canon = full
            .canonicalize()
            .map_err(|e| self.at(src, format!("{what} {}: {e}", full.display()), None))?;
        if !canon.starts_with(&folder.canon) {
            return Err(self.at(
                src,
                format!(
                    "`{}` resolves outside the scenario's folder (through a link)",
                    shown(&src.value)
                ),
                None,
            ));
        }
        let meta = std::fs::metadata(&canon)
            .map_err(|e| self.at(src, format!("{}: {e}", full.display()), None))?;
        if !meta.is_file() || meta.len() > MAX_HTTP_FILE {
            return Err(self.at(
                src,
                format!("{} is not a regular file of at most 16 MiB", full.display()),
                None,
            ));
        }
        let bytes = std::fs::read(&canon)
            .map_err(|e| self.at(src, format!("{}: {e}", full.display()), None))?;
        let body = match String::from_utf8(bytes) {
            Ok(text) => render(&text, vars)
                .map_err(|m| {
                    self.at(
                        src,
                        format!("{}: {m}", full.display()),
                        Some(fleet_hint(one_of(vars.keys().map(String::as_str)), vars)),
                    )
                })?
                .into_bytes(),
            Err(e) => e.into_bytes(),
        };
        Ok((full, body))
    }
}

/// Harness variables available to HTTP files and the boot URL as `{{name}}`.
fn builtin_vars(subnet: &Subnet, raw: &RawScenario) -> BTreeMap<String, String> {
    let server = subnet.server().to_string();
    let lun = raw
        .services
        .iscsi
        .lun
        .as_ref()
        .map(|l| l.value)
        .unwrap_or(1);
    let mut vars = BTreeMap::from([
        ("server".to_string(), server.clone()),
        ("subnet".to_string(), subnet.to_string()),
        ("http_url".to_string(), format!("http://{server}")),
        ("lun".to_string(), lun.to_string()),
    ]);
    if let Some(p) = &raw.services.iscsi.second_portal {
        vars.insert("portal2".to_string(), p.value.address.value.to_string());
    }
    // A fleet's target differs per node while its files are one for all: the script derives it
    // from ${hostname} as the field's menus do (no `target_iqn` or `root_path` then).
    if let Some(target) = &raw.services.iscsi.target {
        let target = target.value.to_string();
        vars.insert("target_iqn".to_string(), target.clone());
        vars.insert(
            "root_path".to_string(),
            format!("iscsi:{server}:::{lun}:{target}"),
        );
    }
    vars
}

/// In a fleet the per-node names are not harness variables: say so beside the valid names.
fn fleet_hint(valid: String, vars: &BTreeMap<String, String>) -> String {
    if vars.contains_key("root_path") {
        valid
    } else {
        format!(
            "{valid}; with `per_node` targets, root_path and target_iqn differ per node: build them in the script from ${{hostname}}, e.g. iscsi:{{{{server}}}}:::{{{{lun}}}}:iqn.2026-11.lab:${{hostname}}-root"
        )
    }
}
