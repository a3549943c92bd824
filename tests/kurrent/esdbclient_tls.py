"""esdbclient against a TLS server with users: esdb://USER:PASSWORD@localhost:PORT (TLS on),
the server's self-signed certificate as the root. Appends and reads as admin, is refused
$users and appends to $secret as a plain user, and is refused with a wrong password.

Usage: python esdbclient_tls.py 'esdb://{user}:{password}@localhost:PORT' CA_FILE
"""

import sys

from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import AccessDeniedError, EventStoreDBClientException


def client(uri, user, password, ca):
    return EventStoreDBClient(uri.format(user=user, password=password), root_certificates=ca)


def main(uri, ca_file):
    with open(ca_file) as f:
        ca = f.read()
    admin = client(uri, "admin", "changeit", ca)
    events = [NewEvent(type="Happened", data=b'{"n":%d}' % n) for n in range(3)]
    admin.append_to_stream("order-1", current_version=StreamState.NO_STREAM, events=events)
    got = admin.get_stream("order-1")
    assert [e.id for e in got] == [e.id for e in events], got
    assert [e.data for e in got] == [e.data for e in events], got
    print("admin: appended and read 3 events over TLS")

    ada = client(uri, "ada", "ada-pw", ca)
    assert len(ada.get_stream("order-1")) == 3
    # Reads refused end the call with PERMISSION_DENIED (as KurrentDB's do); the client
    # raises its generic error for them.
    try:
        ada.get_stream("$users")
    except EventStoreDBClientException as e:
        assert "PERMISSION_DENIED" in str(e), e
        print("ada: reading $users refused with PERMISSION_DENIED")
    else:
        raise AssertionError("ada read $users")
    # Appends refused come back as the batch's AccessDenied error.
    try:
        ada.append_to_stream("$secret", current_version=StreamState.ANY, events=[events[0]])
    except AccessDeniedError:
        print("ada: appending to $secret refused with AccessDeniedError")
    else:
        raise AssertionError("ada appended to $secret")

    try:
        wrong = client(uri, "admin", "wrong", ca)
        wrong.append_to_stream("order-1", current_version=StreamState.ANY, events=[events[0]])
    except EventStoreDBClientException as e:
        print(f"wrong password: refused ({type(e).__name__})")
    else:
        raise AssertionError("an append with a wrong password succeeded")
    assert len(admin.get_stream("order-1")) == 3, "the refused append wrote nothing"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
