//! Items to and from DynamoDB attribute maps: `pk` and `sk` as strings, then each attribute.

use aws_sdk_dynamodb::types::AttributeValue;
use livesync_core::store::{Attr, Attrs, Item, Key, StoreError};
use std::collections::HashMap;

pub fn to_attribute(value: &Attr) -> AttributeValue {
    match value {
        Attr::S(s) => AttributeValue::S(s.clone()),
        Attr::N(n) => AttributeValue::N(n.to_string()),
    }
}

pub fn key_attributes(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(key.pk.clone())),
        ("sk".to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

pub fn item_attributes(item: &Item) -> HashMap<String, AttributeValue> {
    let mut attributes = key_attributes(&item.key);
    attributes.extend(item.attrs.iter().map(|(name, value)| (name.clone(), to_attribute(value))));
    attributes
}

/// Reads an item back; anything LiveSync does not write (other types, a missing key) is refused.
pub fn item_from_attributes(attributes: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let string = |name: &str| match attributes.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    let (Some(pk), Some(sk)) = (string("pk"), string("sk")) else {
        return Err(StoreError::Malformed { key: Key::new("?", "?"), reason: "no string pk and sk".to_owned() });
    };
    let key = Key::new(pk, sk);
    let mut attrs = Attrs::new();
    for (name, value) in attributes {
        if name == "pk" || name == "sk" {
            continue;
        }
        let value = match value {
            AttributeValue::S(s) => Attr::S(s.clone()),
            AttributeValue::N(n) => Attr::N(n.parse().map_err(|_| StoreError::Malformed {
                key: key.clone(),
                reason: format!("attribute {name} is not a 64-bit integer: {n}"),
            })?),
            other => {
                return Err(StoreError::Malformed {
                    key,
                    reason: format!("attribute {name} has an unexpected type: {other:?}"),
                });
            }
        };
        attrs.insert(name.clone(), value);
    }
    Ok(Item { key, attrs })
}
