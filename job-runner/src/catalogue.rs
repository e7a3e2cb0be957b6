//! What the app tells people about a fruit: `data/fruits.toml`, one entry per Fruits-360
//! variety, shipped inside the binary; `--catalogue FILE` replaces it.
//!
//! A label maps to the entry of the same name, else to the entry of the label without its
//! trailing number ("Apple Red 2" -> "Apple Red"), without regard to case.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const SHIPPED: &str = include_str!("../../data/fruits.toml");

/// One variety.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fruit {
    /// The entry's name, as in the catalogue (filled in from its key).
    #[serde(default)]
    pub name: String,
    pub common: String,
    pub botanical: String,
    pub family: String,
    pub about: String,
}

pub struct Catalogue {
    /// By lower-case name.
    entries: BTreeMap<String, Fruit>,
}

impl Catalogue {
    /// The catalogue shipped with fruitpipe.
    pub fn shipped() -> Catalogue {
        Catalogue::parse(SHIPPED, "the shipped data/fruits.toml")
            .expect("the shipped catalogue is valid")
    }

    /// Reads a catalogue in the format of `data/fruits.toml`.
    pub fn parse(text: &str, what: &str) -> Result<Catalogue> {
        let table: BTreeMap<String, Fruit> = toml::from_str(text).map_err(|err| {
            Error::Config(format!(
                "{what} is not a fruit catalogue: {}; see data/fruits.toml for the format",
                err.message()
            ))
        })?;
        let entries = table
            .into_iter()
            .map(|(name, mut fruit)| {
                fruit.name = name.clone();
                (name.to_lowercase(), fruit)
            })
            .collect();
        Ok(Catalogue { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for a label (see the module's rule).
    pub fn lookup(&self, label: &str) -> Option<&Fruit> {
        let label = label.trim().to_lowercase();
        self.entries
            .get(&label)
            .or_else(|| self.entries.get(without_number(&label)))
    }
}

/// "apple red 2" -> "apple red"; a label without a trailing number is itself.
fn without_number(label: &str) -> &str {
    match label.rsplit_once(' ') {
        Some((base, number))
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 131 classes of the Fruits-360 release 2020.05.18, the newest whose class list
    /// could be checked here; the 85 of the shipped sample (2019.01.16.0) are among them.
    const FRUITS_360: &str = "Apple Braeburn,Apple Crimson Snow,Apple Golden 1,Apple Golden 2,Apple Golden 3,Apple Granny Smith,Apple Pink Lady,Apple Red 1,Apple Red 2,Apple Red 3,Apple Red Delicious,Apple Red Yellow 1,Apple Red Yellow 2,Apricot,Avocado,Avocado ripe,Banana,Banana Lady Finger,Banana Red,Beetroot,Blueberry,Cactus fruit,Cantaloupe 1,Cantaloupe 2,Carambula,Cauliflower,Cherry 1,Cherry 2,Cherry Rainier,Cherry Wax Black,Cherry Wax Red,Cherry Wax Yellow,Chestnut,Clementine,Cocos,Corn,Corn Husk,Cucumber Ripe,Cucumber Ripe 2,Dates,Eggplant,Fig,Ginger Root,Granadilla,Grape Blue,Grape Pink,Grape White,Grape White 2,Grape White 3,Grape White 4,Grapefruit Pink,Grapefruit White,Guava,Hazelnut,Huckleberry,Kaki,Kiwi,Kohlrabi,Kumquats,Lemon,Lemon Meyer,Limes,Lychee,Mandarine,Mango,Mango Red,Mangostan,Maracuja,Melon Piel de Sapo,Mulberry,Nectarine,Nectarine Flat,Nut Forest,Nut Pecan,Onion Red,Onion Red Peeled,Onion White,Orange,Papaya,Passion Fruit,Peach,Peach 2,Peach Flat,Pear,Pear 2,Pear Abate,Pear Forelle,Pear Kaiser,Pear Monster,Pear Red,Pear Stone,Pear Williams,Pepino,Pepper Green,Pepper Orange,Pepper Red,Pepper Yellow,Physalis,Physalis with Husk,Pineapple,Pineapple Mini,Pitahaya Red,Plum,Plum 2,Plum 3,Pomegranate,Pomelo Sweetie,Potato Red,Potato Red Washed,Potato Sweet,Potato White,Quince,Rambutan,Raspberry,Redcurrant,Salak,Strawberry,Strawberry Wedge,Tamarillo,Tangelo,Tomato 1,Tomato 2,Tomato 3,Tomato 4,Tomato Cherry Red,Tomato Heart,Tomato Maroon,Tomato Yellow,Tomato not Ripened,Walnut,Watermelon";

    #[test]
    fn every_class_of_the_release_has_an_entry() {
        let catalogue = Catalogue::shipped();
        let classes: Vec<&str> = FRUITS_360.split(',').collect();
        assert_eq!(classes.len(), 131);
        for class in classes {
            let fruit = catalogue
                .lookup(class)
                .unwrap_or_else(|| panic!("no entry for {class}"));
            assert!(!fruit.common.is_empty() && !fruit.botanical.is_empty());
            assert!(
                !fruit.family.is_empty() && fruit.about.len() > 30,
                "{class}"
            );
        }
    }

    #[test]
    fn every_class_of_the_shipped_photos_has_an_entry() {
        let catalogue = Catalogue::shipped();
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/fruits360-sample/Training"
        );
        for entry in std::fs::read_dir(root).unwrap() {
            let class = entry.unwrap().file_name().into_string().unwrap();
            assert!(catalogue.lookup(&class).is_some(), "no entry for {class}");
        }
    }

    #[test]
    fn labels_map_by_name_then_without_their_number() {
        let catalogue = Catalogue::shipped();
        assert_eq!(catalogue.lookup("Apple Red 2").unwrap().name, "Apple Red");
        assert_eq!(
            catalogue.lookup("apple red delicious").unwrap().name,
            "Apple Red Delicious"
        );
        assert_eq!(
            catalogue.lookup("Cherry Wax Black").unwrap().name,
            "Cherry Wax Black"
        );
        assert_eq!(catalogue.lookup("Tomato 17").unwrap().name, "Tomato");
        assert!(catalogue.lookup("Durian").is_none());
        assert_eq!(without_number("pear"), "pear");
        assert_eq!(without_number("grape white 4"), "grape white");
    }

    #[test]
    fn a_broken_catalogue_says_what_is_wrong() {
        let err = Catalogue::parse("[\"Kiwi\"]\ncommon = 3\n", "my.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("my.toml is not a fruit catalogue"), "{err}");
        let err = Catalogue::parse("[\"Kiwi\"]\ncommon = \"Kiwi\"\n", "my.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing field"), "{err}");
    }
}
