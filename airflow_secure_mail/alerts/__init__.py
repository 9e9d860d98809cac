"""Alert digests: Alertmanager-style grouping, throttling, inhibition and silences for Airflow alert mail.

The modules form one line; each imports only those below it (inside functions and under ``TYPE_CHECKING``
too), and none imports notifications, operators, hooks or the CLI:

    digest | cli   AlertDigest, the public class (its methods hand the knobs down) | the ``silence`` commands
    callback       what the notifier does with a callback: record the event, flush its group
    flush          claim due digests write-once, send them, prune
    render         subject, text and HTML of a digest (templates/ beside it)
    plan           whether the next digest is due, and the claim it makes
    view           what a claimed digest shows
    claims         Claim and AlertState (plain data)
    silences       matchers with a time window
    state          write-once objects on object storage
    knobs          DigestKnobs: AlertDigest's fields and their validation
    events         Event, Kind, LABELS
    fields         what a callback context says (also the notifier's single-alert mail)
"""
