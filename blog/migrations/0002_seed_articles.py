"""Seeds the demo blog with six articles, long enough that a reader scrolls through them."""

import datetime

from django.db import migrations

UTC = datetime.UTC

ARTICLES = [
    {
        "title": "Why your Postgres index is not being used",
        "slug": "why-your-postgres-index-is-not-being-used",
        "published_at": datetime.datetime(2026, 9, 8, 7, 30, tzinfo=UTC),
        "paragraphs": [
            "You added an index, ran the slow query again, and EXPLAIN still shows a sequential scan "
            "over four million rows. It is tempting to conclude that the planner is broken, or that "
            "Postgres simply ignores indexes on a whim. It does neither. The planner is a cost model: it "
            "estimates how many rows each step will produce and how many pages it will have to read, and "
            "picks the cheapest plan it can find. When it skips your index, one of its inputs disagrees "
            "with what you believe about your data.",
            "The most common culprit is a function wrapped around the column. An index on email does "
            "nothing for WHERE lower(email) = $1, because the index stores email, not lower(email). You "
            "can either build an expression index on lower(email) or give the column a case-insensitive "
            "collation so that the plain comparison does what you meant. The same trap appears with "
            "date_trunc on timestamps, with COALESCE, and with arithmetic on the indexed side of a "
            "comparison: move the work to the parameter side whenever you can.",
            "The second culprit is a type mismatch. Comparing a bigint column with a numeric parameter, "
            "or a varchar column with a value your ORM sent as text, can force a cast on every row. The "
            "plan gives it away: instead of an Index Cond line you see a Filter line, and the estimated "
            "row count is wildly off. Matching the parameter type to the column type is usually a "
            "one-line fix in the query, and it is worth checking before anything more elaborate.",
            "Then there is selectivity. If a third of the table matches your condition, walking the "
            "table in physical order really is cheaper than hopping back and forth through the index and "
            "fetching pages at random. This is where partial indexes earn their keep. An index on "
            "created_at WHERE processed = false stays tiny when almost every row is processed, and the "
            "planner will happily use it for the queue query that only ever asks for unprocessed jobs.",
            "Multicolumn indexes have their own rule: they are most useful when the query constrains the "
            "leading columns. An index on (tenant_id, created_at) serves WHERE tenant_id = $1 ORDER BY "
            "created_at beautifully and does little for a query that filters on created_at alone. If you "
            "find yourself adding a second index with the same columns in a different order, ask which "
            "queries actually run and how often; each index is paid for on every write.",
            "Statistics go stale, too. After a bulk load, or after a migration that rewrote a large "
            "table, run ANALYZE so the planner sees the new distribution. On tables with skewed values, "
            "raising the statistics target for one column can turn a bad estimate into a good one. If "
            "autovacuum cannot keep up with your write rate, the visibility map falls behind and "
            "index-only scans quietly stop being index-only.",
            "When in doubt, EXPLAIN (ANALYZE, BUFFERS) is the tool that tells the truth. It runs the "
            "query and prints, for every node, the estimated rows next to the actual rows and the number "
            "of shared pages hit or read. Large gaps between estimate and reality point at statistics; "
            "large buffer counts point at the access path. Read the plan from the innermost node "
            "outwards, and the reason your index sat idle is almost always in there.",
        ],
    },
    {
        "title": "A gentle introduction to Django Channels",
        "slug": "a-gentle-introduction-to-django-channels",
        "published_at": datetime.datetime(2026, 9, 22, 9, 0, tzinfo=UTC),
        "paragraphs": [
            "Django grew up answering one request with one response. That model covers most of the web, "
            "but not all of it: chat, notifications, collaborative editing and live dashboards want a "
            "connection that stays open so the server can speak first. Channels extends Django to those "
            "protocols, WebSockets first among them, without asking you to leave the framework you know. "
            "The settings, the ORM, the sessions and the authentication all carry over.",
            "The central idea is the consumer. Where a view handles one request, a consumer handles one "
            "connection for as long as it lives. A WebSocket consumer receives a connect event, any "
            "number of receive events as frames arrive, and finally a disconnect. In between, it can send "
            "frames whenever it likes. Consumers come in synchronous and asynchronous flavours; the "
            "asynchronous ones scale to many idle connections per process, which is the usual case.",
            "Routing looks familiar. A ProtocolTypeRouter in asgi.py sends plain HTTP to Django's usual "
            "handler and WebSocket connections to a URLRouter of your own, with path() patterns just like "
            "urls.py. Wrapping that router in the authentication middleware stack gives each consumer a "
            "scope['user'] taken from the session cookie the browser sent with the handshake, so a "
            "signed-in reader is recognised without any extra protocol.",
            "Consumers in different processes talk through a channel layer. Each connection has a channel "
            "name, and groups let you address many channels with one name: send to the group and every "
            "member receives the message. This is how most chat rooms and live feeds are built, and it "
            "works across processes and machines as soon as the layer is backed by Redis.",
            "That convenience has a cost worth measuring. Every message through the layer is serialised, "
            "and with Redis it travels over the network even when sender and receiver share a process. "
            "For fan-out to thousands of connections, it pays to batch: let one object per process "
            "subscribe once and hand messages to its local connections directly. Groups also cannot be "
            "listed and expire after a day by default, so they are a poor place to keep state you need "
            "to count.",
            "Testing is pleasant. The WebsocketCommunicator drives a consumer in-process: connect, send a "
            "frame, assert on the frames that come back, disconnect. No server, no sockets, no sleeping. "
            "Once that works, a handful of end-to-end tests against a real Daphne process catch the "
            "things in-process tests cannot, such as origin checks and proxy headers.",
            "Deployment changes less than people fear. Daphne, Uvicorn and Hypercorn all speak ASGI, and "
            "any of them can serve both your pages and your sockets. Behind a reverse proxy, remember to "
            "forward the Upgrade and Connection headers, raise the proxy's read timeout above your "
            "heartbeat interval, and check the Origin header at the handshake, because browsers do not "
            "apply the same-origin policy to WebSockets the way they do to fetch.",
            "Plan for connections to end. Servers restart, laptops sleep, phones switch from Wi-Fi to "
            "mobile data. A client that reconnects with exponential backoff and a little random jitter "
            "recovers gracefully, and a server that treats every disconnect as normal rather than "
            "exceptional stays simple. Anything a connection must not forget belongs in the database or "
            "in Redis, not in the consumer instance.",
            "Start small: a consumer, a route, and daphne at the top of INSTALLED_APPS so that runserver "
            "speaks WebSockets. Add Redis when you run more than one process, and keep an eye on the "
            "timeouts of your Redis client, because a blocking read that times out looks a lot like a "
            "crash from the browser's side.",
        ],
    },
    {
        "title": "Designing a reading-progress bar that respects your readers",
        "slug": "designing-a-reading-progress-bar",
        "published_at": datetime.datetime(2026, 10, 6, 14, 15, tzinfo=UTC),
        "paragraphs": [
            "A thin bar across the top of an article, filling as you scroll, is one of the smallest "
            "pieces of interface on a blog and one of the easiest to get wrong. Done well, it answers a "
            "quiet question, how much is left, and then gets out of the way. Done badly, it jitters, "
            "lies about the length of the page, and drains a phone's battery while the reader is trying "
            "to concentrate.",
            "The first decision is what to measure. The scroll height of the whole document includes the "
            "header, the comments, the footer and the list of related posts, none of which the reader "
            "came for. Measure the article element instead: how far the bottom of the viewport has "
            "travelled through it, clamped between zero and one. A reader who has reached the last "
            "paragraph has finished, even if a long comment thread follows.",
            "The second is how often to compute it. Scroll events fire many times per frame on some "
            "devices. Doing layout work in the handler forces the browser to recalculate styles again "
            "and again. Read the element's bounding box once per animation frame at most, and write the "
            "bar's width with a transform rather than a width property, so the compositor can move it "
            "without a layout pass.",
            "If the progress is sent anywhere, to an analytics endpoint or to a live count of who is "
            "reading what, throttle harder. Once a second is plenty, and only when the value has moved "
            "by a noticeable amount. A reader who rests on one paragraph for five minutes should cause "
            "no traffic at all. Small deltas are noise; nobody needs to know that someone moved from 41.2 "
            "to 41.3 percent.",
            "Accessibility matters even for decoration. A progress bar that is purely visual should be "
            "hidden from screen readers with aria-hidden, because announcing a changing percentage on "
            "every scroll is maddening. If you want to expose progress, use a proper progressbar role "
            "with a value that updates rarely. Respect prefers-reduced-motion by dropping the smooth "
            "transition.",
            "Test on a real phone. Mobile browsers resize the viewport as the address bar slides in and "
            "out, which changes the visible height in the middle of a scroll. Use the visual viewport "
            "where it is available, or accept a little wobble near the edges; what matters is that the "
            "value never runs backwards while the reader moves forwards.",
            "Finally, consider what the bar implies. Showing readers that others are reading the same "
            "article, and roughly where they are, can make a page feel alive. It can also feel like "
            "surveillance if it shows too much. Aggregate positions into buckets, never show who someone "
            "is unless they chose a name, and make the whole thing easy to ignore.",
        ],
    },
    {
        "title": "The five-second timeout that broke our WebSockets",
        "slug": "the-five-second-timeout-that-broke-our-websockets",
        "published_at": datetime.datetime(2026, 10, 20, 8, 45, tzinfo=UTC),
        "paragraphs": [
            "On a Tuesday morning our support inbox filled with the same complaint: the live view kept "
            "reconnecting. Not failing, exactly. The page would connect, show a count, go quiet, and "
            "then the little connection indicator would blink red and green again. The server logs were "
            "full of timeouts from Redis, roughly one every five seconds per connection, and Redis itself "
            "was bored: low latency, almost no commands per second, plenty of memory.",
            "The cadence was the clue. Five seconds is a suspiciously round number, and nothing in our "
            "code mentioned it. What had changed was a dependency. A routine upgrade of the Redis client "
            "library had brought in a new default: connections now gave up on any read that took longer "
            "than five seconds. For ordinary commands that is a sensible safety net. For a blocking pop "
            "that waits for a message that may never come, it is a trap.",
            "Our channel layer used exactly such a blocking pop. Each idle consumer asked Redis to wait "
            "up to five seconds for a message, and the client had just been told to wait at most five "
            "seconds for an answer. Whichever timer fired first won. When the client's won, it raised an "
            "exception inside the consumer's receive loop, the consumer died, the server closed the "
            "socket with an internal error, and the browser dutifully reconnected.",
            "The fix was a single setting: pass an explicit socket timeout of None for the channel "
            "layer's connections, so the blocking read is bounded by the command's own timeout and not "
            "by the socket. While we were there, we raised the connection pool's cap as well. The "
            "default of one hundred connections per pool is generous for a web app that runs short "
            "queries, and tight for a process holding thousands of idle WebSockets.",
            "The more interesting lesson was about our tests. Every one of them passed throughout. They "
            "ran against an in-memory channel layer, or against Redis for a few hundred milliseconds at "
            "a time, and nothing in them ever sat idle for five seconds. The bug lived entirely in the "
            "gap between what we tested and how the system is actually used: mostly waiting.",
            "We now have a test that opens a connection, waits longer than the longest timeout we know "
            "of, and checks that the connection is still there and still receives messages. It is slow "
            "by the standards of the suite, so it carries a marker and runs in CI rather than on every "
            "save. It has already paid for itself once, when another dependency bump changed a default "
            "we had never heard of.",
            "Pin your dependencies, read the changelogs of the ones that hold your sockets, and test the "
            "boring case. An idle connection is the most common state a WebSocket is ever in.",
        ],
    },
    {
        "title": "Structured logging in Python without a framework",
        "slug": "structured-logging-in-python-without-a-framework",
        "published_at": datetime.datetime(2026, 11, 3, 11, 0, tzinfo=UTC),
        "paragraphs": [
            "Most Python services start with print statements, graduate to the logging module, and then "
            "spend a week arguing about which structured logging library to adopt. The standard library "
            "already does most of what you need. The trick is to stop formatting messages into prose and "
            "start attaching facts to records.",
            "Every logging call accepts an extra dictionary, and its keys become attributes of the log "
            "record. logger.info('order placed', extra={'order_id': order.id, 'total': order.total}) "
            "carries two machine-readable fields alongside a human-readable message. A formatter can then "
            "emit the whole record as one JSON object per line, which every log aggregator understands.",
            "Writing that formatter takes about twenty lines: subclass logging.Formatter, collect the "
            "standard attributes you care about, such as time, level, logger name and message, add any "
            "attribute that is not part of a plain LogRecord, and json.dumps the result with a default "
            "that turns unknown objects into strings. Include the exception text when exc_info is set, "
            "and you are done.",
            "Levels deserve a policy too. DEBUG is for developers at their desk and should be safe to "
            "leave off in production. INFO records things that happened and that someone may ask about "
            "later: a deploy, a job finished, a payment accepted. WARNING means something unexpected that "
            "the code handled; ERROR means it did not. If nobody would act on a message, it is not a "
            "warning.",
            "Keep the message itself constant. 'order placed' is searchable and countable; 'order 1234 "
            "placed for 56.78' is neither, because every line is unique. Let the fields carry the "
            "variable parts. This also means passing arguments lazily, logger.debug('cache miss for %s', "
            "key), so the string is only built when the level is enabled.",
            "Context is the part people reach for libraries to solve: a request id that should appear on "
            "every line logged while handling one request. A contextvars.ContextVar set in middleware and "
            "read by a logging.Filter covers it, and because context variables follow asyncio tasks, it "
            "works in async code too. Add the filter to the handler, not the logger, so that third-party "
            "loggers get the field as well.",
            "Configure it all in one place, with dictConfig, at startup. Libraries should never configure "
            "logging; they should only create loggers named after their modules and log to them. The "
            "application decides where records go and in what shape. In development, that can be a "
            "coloured console; in production, JSON on standard output for the platform to collect.",
            "None of this rules out a library later. But starting from the standard module teaches you "
            "what the libraries are doing, and for many services the twenty-line formatter is all you "
            "will ever need.",
        ],
    },
    {
        "title": "Feature flags are a loan, not a gift",
        "slug": "feature-flags-are-a-loan-not-a-gift",
        "published_at": datetime.datetime(2026, 11, 17, 16, 20, tzinfo=UTC),
        "paragraphs": [
            "Feature flags are wonderful. They let you merge unfinished work without showing it, roll a "
            "change out to one percent of users before everyone, and turn a misbehaving feature off at "
            "two in the morning without a deploy. Every team that adopts them wonders how it ever "
            "shipped without. A year later, many of those teams wonder why their code has become so hard "
            "to change.",
            "The reason is that every flag is a branch that both sides of must keep working. A codebase "
            "with ten live flags has, in principle, a thousand combinations of behaviour. Nobody tests "
            "them all, so in practice the combinations that matter are the ones production happens to "
            "run, and the others rot quietly until someone flips a switch that has not moved in months.",
            "Treat a flag as a loan. It buys you speed today and charges interest every day it stays "
            "open: a little more complexity in each file it touches, a little more doubt in each test "
            "that does not set it. The way to keep the interest low is to plan the repayment when you "
            "take out the loan. Give every flag an owner and an expiry date, and put its removal on the "
            "board on the day it is created.",
            "Not all flags are the same kind of debt. A release flag that hides a half-built feature "
            "should live for days or weeks. An operational kill switch for an expensive integration may "
            "live for years, and that is fine, as long as it is named and documented as one. A flag used "
            "to sell a feature to some customers is not a flag at all; it is an entitlement, and belongs "
            "in your data model rather than your flag service.",
            "Be careful with flags that change data. A flag that switches which column new rows are "
            "written to cannot simply be turned off again: the rows written while it was on stay where "
            "they are. Changes like that need a migration plan, and the flag is only one step of it. "
            "Write down what turning the flag off would mean before you turn it on.",
            "Make stale flags visible. A weekly report of flags that have been fully on or fully off for "
            "thirty days, with the owner's name next to each, removes most of the excuse for keeping "
            "them. Removing a flag is usually a pleasant change: delete the losing branch, delete its "
            "tests, and enjoy a diff that is mostly red.",
            "Finally, test the default. When the flag service is unreachable, your code falls back to "
            "something. Make sure that something is the safe choice, and make sure a test proves it, "
            "because the day the flag service goes down is not the day to find out.",
        ],
    },
]


def seed(apps, schema_editor):
    Article = apps.get_model("blog", "Article")
    for article in ARTICLES:
        Article.objects.get_or_create(
            slug=article["slug"],
            defaults={
                "title": article["title"],
                "body": "\n\n".join(article["paragraphs"]),
                "published_at": article["published_at"],
            },
        )


def unseed(apps, schema_editor):
    Article = apps.get_model("blog", "Article")
    Article.objects.filter(slug__in=[article["slug"] for article in ARTICLES]).delete()


class Migration(migrations.Migration):
    dependencies = [("blog", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
