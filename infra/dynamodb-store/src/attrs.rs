//! Items to and from DynamoDB attribute maps: `pk` and `sk` as strings, then each attribute.

use aws_sdk_dynamodb::types::AttributeValue;
use livesync_core::store::{Attr, Item, Key, StoreError, StoredAttr};
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

/// Reads an item back; anything LiveSync does not write is refused.
pub fn item_from_attributes(attributes: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    Item::from_stored(attributes.iter().map(|(name, value)| (name.as_str(), stored(value))))
}

fn stored(value: &AttributeValue) -> StoredAttr<'_> {
    match value {
        AttributeValue::S(s) => StoredAttr::S(s),
        AttributeValue::N(n) => StoredAttr::N(n),
        AttributeValue::Bool(_) => StoredAttr::Other("BOOL"),
        AttributeValue::Null(_) => StoredAttr::Other("NULL"),
        AttributeValue::M(_) => StoredAttr::Other("M"),
        AttributeValue::L(_) => StoredAttr::Other("L"),
        _ => StoredAttr::Other("B, SS, NS or BS"),
    }
}
