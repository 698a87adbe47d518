//! Image recipes as the scenario format sees them: the folders of `images/` that hold a
//! `recipe.yaml`, and the parameters each takes. The scenario stage checks a scenario's
//! `image.set` against them before anything is built; the image stage builds from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RecipeError {
    #[error("unknown image recipe `{name}`; valid: {valid}")]
    #[diagnostic(help("recipes are the folders of images/ that hold a recipe.yaml"))]
    UnknownRecipe { name: String, valid: String },
    #[error("recipe `{recipe}` has no parameter `{param}`; valid: {valid}")]
    UnknownParam {
        recipe: String,
        param: String,
        valid: String,
    },
    #[error("recipe `{recipe}`: parameter `{param}` cannot be `{value}`; valid: {valid}")]
    BadParamValue {
        recipe: String,
        param: String,
        value: String,
        valid: String,
    },
    #[error("{path}: {message}")]
    BadRecipe { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecipeError + '_ {
    move |source| RecipeError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    description: String,
    flavour: String,
    #[serde(default)]
    suite: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub default: String,
    pub help: String,
    /// The values the parameter may take; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub dir: PathBuf,
    pub description: String,
    pub flavour: String,
    pub params: BTreeMap<String, ParamSpec>,
}

impl Recipe {
    /// Recipe defaults overlaid with the scenario's `set`; unknown names are errors.
    pub fn resolve(
        &self,
        set: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RecipeError> {
        let mut out: BTreeMap<String, String> = self
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.default.clone()))
            .collect();
        for (k, v) in set {
            if !self.params.contains_key(k) {
                return Err(RecipeError::UnknownParam {
                    recipe: self.name.clone(),
                    param: k.clone(),
                    valid: names(self.params.keys()),
                });
            }
            let spec = &self.params[k];
            if !spec.values.is_empty() && !spec.values.contains(v) {
                return Err(RecipeError::BadParamValue {
                    recipe: self.name.clone(),
                    param: k.clone(),
                    value: v.clone(),
                    valid: names(spec.values.iter()),
                });
            }
            out.insert(k.clone(), v.clone());
        }
        Ok(out)
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = it.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub fn list_recipes(images_dir: &Path) -> Result<Vec<Recipe>, RecipeError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(images_dir).map_err(io(images_dir))?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("recipe.yaml").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(load_recipe(images_dir, &name)?);
    }
    Ok(out)
}

pub fn load_recipe(images_dir: &Path, name: &str) -> Result<Recipe, RecipeError> {
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let dir = images_dir.join(name);
    let file = dir.join("recipe.yaml");
    if !valid_name || !file.is_file() {
        let valid = std::fs::read_dir(images_dir)
            .map(|rd| {
                let mut v: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("recipe.yaml").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                names(v.iter())
            })
            .unwrap_or_else(|_| "none".into());
        return Err(RecipeError::UnknownRecipe {
            name: name.to_string(),
            valid,
        });
    }
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let rf: RecipeFile = serde_saphyr::from_str(&text).map_err(|e| RecipeError::BadRecipe {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    let flavour_file = images_dir
        .join("lib/flavours")
        .join(format!("{}.sh", rf.flavour));
    if !flavour_file.is_file() {
        return Err(RecipeError::BadRecipe {
            path: file.display().to_string(),
            message: format!("flavour `{}` has no {}", rf.flavour, flavour_file.display()),
        });
    }
    let bad = |message: String| RecipeError::BadRecipe {
        path: file.display().to_string(),
        message,
    };
    for (k, p) in &rf.params {
        if !p.values.is_empty() && !p.values.contains(&p.default) {
            return Err(bad(format!(
                "parameter `{k}`: the default `{}` is not one of its values ({})",
                p.default,
                names(p.values.iter())
            )));
        }
    }
    // build-image takes the suite from the parameter when there is one: one place to say it.
    if rf.suite.is_some() && rf.params.contains_key("suite") {
        return Err(bad(
            "`suite:` and a `suite` parameter: give the suite once, as the parameter's default"
                .into(),
        ));
    }
    let _ = rf.packages;
    Ok(Recipe {
        name: name.to_string(),
        dir,
        description: rf.description,
        flavour: rf.flavour,
        params: rf.params,
    })
}
