"""moto_server, with each DynamoDB and DynamoDB Streams request applied atomically, as on AWS.

moto 5.2.5 serves requests on many threads with no lock around DynamoDB's operations, and a
TransactWriteItems that is cancelled restores every table it touched from a copy taken when it
began: any write another thread committed meanwhile is silently undone. Real DynamoDB never does
that (a conditional write or a transaction is atomic), and LiveSync's own tests race writers on
purpose, so they would see lost updates that AWS cannot produce. This runs moto's own server
unchanged, except that one lock serialises the requests of those two services, and that a
cancelled transaction keeps the table's stream shard: moto's restored copy would bring a new
shard object, while open shard iterators keep reading the old one, which still holds records of
the writes that were rolled back (read as if they happened) and never receives later ones.
Also, moto no longer keeps a reference to every object it ever made (see `_untracked`).

Usage: python scripts/moto_server.py -H 127.0.0.1 -p 5005   (the arguments of moto_server)
"""

import functools
import sys
import threading

from moto.core.common_models import BaseModel
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import main

_one_at_a_time = threading.RLock()


def _atomic(handler):
    call_action = handler.call_action

    @functools.wraps(call_action)
    def serialised(self):
        with _one_at_a_time:
            return call_action(self)

    handler.call_action = serialised


_atomic(DynamoHandler)
_atomic(DynamoDBStreamsHandler)

_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_keeping_streams(self, transact_items):
    # The stream shard of every table, and how many records it held before the transaction.
    shards = {name: (table.stream_shard, len(table.stream_shard.items))
              for name, table in self.tables.items() if table.stream_shard is not None}
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for name, (shard, length) in shards.items():
            restored = self.tables.get(name)
            if restored is not None and restored.stream_shard is not shard:
                del shard.items[length:]
                shard.table = restored
                restored.stream_shard = shard
        raise


DynamoDBBackend.transact_write_items = _transact_keeping_streams


def _untracked(cls, *args, **kwargs):
    # moto keeps every model object it ever creates in its class's `instances_tracked` (for its
    # own dashboard), and a TransactWriteItems deep-copies each table it touches, items and
    # stream records included, to restore it if the transaction is cancelled: each copy was
    # kept forever. The cost table's 1,000-subscriber rows grew moto past 20 GB that way.
    return object.__new__(cls)


BaseModel.__new__ = _untracked

if __name__ == "__main__":
    main(sys.argv[1:])
