//! `image:`: a recipe of the images folder (with its parameters), or a disk image file next
//! to the scenario.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde_saphyr::Spanned;

use super::{ScenarioError, Validator};
use crate::scenario::additions::{self, Additions};
use crate::scenario::raw::{RawAdditions, RawImage};
use crate::scenario::values::shown;
use crate::scenario::ImageRef;

impl Validator<'_> {
    pub(super) fn image(
        &self,
        img: &Spanned<RawImage>,
        dir: &Path,
    ) -> Result<ImageRef, ScenarioError> {
        match &img.value {
            RawImage::Recipe { name, set, add } => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(self.at(
                        img,
                        format!("`{}` is not a recipe name", shown(name)),
                        None,
                    ));
                }
                let flavour = self.recipe_exists(img, name, set)?;
                let add = self.additions(add, dir, &flavour)?;
                Ok(ImageRef::Recipe {
                    name: name.clone(),
                    set: set.clone(),
                    add,
                })
            }
            RawImage::File(f) => {
                let rel = Path::new(f);
                if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir))
                {
                    // The file becomes a disk the guest reads and the run's console records:
                    // a scenario must not be able to hand it any file of the host.
                    return Err(self.at(
                        img,
                        format!("image file `{}` leaves the scenario's folder", shown(f)),
                        Some(
                            "put the disk image in or below the folder of the scenario file".into(),
                        ),
                    ));
                }
                let p = dir.join(rel);
                let meta = std::fs::symlink_metadata(&p)
                    .map_err(|e| self.at(img, format!("image file {}: {e}", p.display()), None))?;
                if meta.file_type().is_symlink() {
                    return Err(self.at(
                        img,
                        format!("image file {} is a symbolic link", p.display()),
                        Some("name the real file: a link could be swapped for another disk between check and use".into()),
                    ));
                }
                if !meta.is_file() {
                    return Err(self.at(
                        img,
                        format!("image file {} is not a regular file", p.display()),
                        None,
                    ));
                }
                Ok(ImageRef::File(p))
            }
        }
    }

    /// `overlay`, `customize` and `dracut_source`: the first two in or below the scenario's
    /// folder, the overlay's links inside it; the dracut tree anywhere on the host (a source
    /// tree fetched once and shared), for the dracut flavour only.
    fn additions(
        &self,
        add: &RawAdditions,
        dir: &Path,
        flavour: &str,
    ) -> Result<Additions, ScenarioError> {
        // Each error points at the key's value.
        fn at<'a>(
            v: &'a Validator<'_>,
            s: &'a Spanned<String>,
        ) -> impl Fn((String, Option<String>)) -> ScenarioError + 'a {
            move |(m, h)| v.at(s, m, h)
        }
        let mut out = Additions::default();
        if let Some(o) = &add.overlay {
            let p = additions::inside(dir, &o.value, "overlay").map_err(at(self, o))?;
            additions::check_overlay(&p).map_err(at(self, o))?;
            out.overlay = Some(absolute(&p));
        }
        if let Some(c) = &add.customize {
            let p = additions::inside(dir, &c.value, "customize script").map_err(at(self, c))?;
            additions::check_customize(&p).map_err(at(self, c))?;
            out.customize = Some(absolute(&p));
        }
        if let Some(d) = &add.dracut_source {
            let p = dir.join(&d.value);
            additions::check_dracut_source(&p, flavour).map_err(at(self, d))?;
            out.dracut_source = Some(absolute(&p));
        }
        Ok(out)
    }

    /// A recipe the images folder does not have, or a parameter it does not take, would
    /// otherwise only show when `run` builds the image: after the run directory was made.
    /// Returns the recipe's flavour.
    fn recipe_exists(
        &self,
        img: &Spanned<RawImage>,
        name: &str,
        set: &BTreeMap<String, String>,
    ) -> Result<String, ScenarioError> {
        use crate::scenario::recipe::RecipeError;
        let images = crate::support::paths::images_dir();
        let checked = crate::scenario::recipe::load_recipe(&images, name)
            .and_then(|r| r.resolve(set).map(|_| r.flavour));
        match checked {
            Ok(flavour) => Ok(flavour),
            Err(RecipeError::UnknownRecipe { name, valid }) => Err(self.at(
                img,
                format!("unknown image recipe `{name}`"),
                Some(format!(
                    "valid: {valid}; recipes are the folders of images/ that hold a recipe.yaml"
                )),
            )),
            Err(RecipeError::UnknownParam {
                recipe,
                param,
                valid,
            }) => Err(self.at(
                img,
                format!("recipe `{recipe}` has no parameter `{}`", shown(&param)),
                Some(format!("valid: {valid}")),
            )),
            Err(RecipeError::BadParamValue {
                recipe,
                param,
                value,
                valid,
            }) => Err(self.at(
                img,
                format!(
                    "recipe `{recipe}`: parameter `{param}` cannot be `{}`",
                    shown(&value)
                ),
                Some(format!("valid: {valid}")),
            )),
            Err(other) => Err(self.at(img, format!("image recipe `{name}`: {other}"), None)),
        }
    }
}

/// The path made absolute (the build runs elsewhere), without resolving links.
fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
