/*
 * tandem: lease arbitration + vouch, two nodes, one failover group.
 * Safety property: never both nodes running the group.
 *
 * See README.md beside this file for what is modelled, the abstractions and how to run it.
 *
 * ---------------------------------------------------------------------------------------------------------
 * Time and clocks
 * ---------------------------------------------------------------------------------------------------------
 * Global time advances in ticks (the `tick` action of the environment). Nodes only ever measure *intervals*
 * on their own monotonic clock (docs/architecture.md: "No wall clock is compared across nodes"), so instead
 * of a per-node clock value we model every interval a node measures as a countdown in real ticks.
 *
 * A node whose clock rate stays within 1 +- rho of real time measures a local interval of length L in a real
 * time d in [L/(1+rho), L/(1-rho)], whatever the rate does inside the interval. All events of the model
 * happen at integer instants: an event at real time x is placed in tick floor(x), and within a tick the model
 * explores every order of events. Then, for an interval started in tick a = floor(x):
 *   - a timer that gives a *lower* bound on when something may happen (contender wait, no-contend time)
 *     fires in tick floor(x + d) >= a + floor(L/(1+rho)): countdown >= floor(L/(1+rho));
 *   - a timer that ends a *belief* (holder validity, vouch validity) ends somewhere inside tick
 *     floor(x + d) <= a + floor(L/(1-rho)) + 1, and the node must be counted as running during that whole
 *     tick: countdown <= floor(L/(1-rho)) + 2 (the countdown reaches 0 at the start of tick a + countdown).
 * So every timer of local length L is given a nondeterministic real length in
 *     [ floor(L/(1+rho)) , floor(L/(1-rho)) + 2 ]
 * chosen when it starts. Choosing independently for every timer forgets that two intervals measured by the
 * same clock are correlated: this only adds behaviours (over-approximation), which is sound for safety.
 * This is the "clock advances 1 per tick, with bounded skips" abstraction folded into each interval: a skip
 * pattern bounded by rho over an interval of length L changes its real length by at most the bounds above.
 *
 * Scaled constants (the real protocol uses rho = 1 %, ttl 5 s, slack 10 ms; the model scales rho up to 10 %
 * and uses 1 tick = slack so that the margins are whole ticks and the state space stays small):
 *   rho = 1/10, slack = 1, ttl T = 5, drift margin m = 2*rho*T + slack = 2
 *   holder validity      T - m       = 3 (local)  -> real [floor(3/1.1), floor(3/0.9)+2] = [2, 5]
 *   contender wait       T + m       = 7 (local)  -> real [floor(7/1.1), floor(7/0.9)+2] = [6, 9]
 *   vouch window W = 5:
 *   holder vouch validity W(1-2rho) - slack = 3   -> real [2, 5]   (from the echoed heartbeat's send time)
 *   no-contend time       W(1+2rho) + slack = 7   -> real [6, 9]   (from the vouch's send time)
 * Every belief ends by real tick 5 after its start; every wait lasts at least 6: the gap is the margin.
 *
 * ---------------------------------------------------------------------------------------------------------
 * Store (DynamoDB lease item)
 * ---------------------------------------------------------------------------------------------------------
 * Conditional writes and consistent reads are linearizable, so each store operation is one atomic step at the
 * instant the node issues it. That is the worst case for safety: the holder's validity counts from the *start*
 * of its write and a later landing only makes contenders see the new version later; a later answer only
 * shortens the holder's remaining belief. An answer may be lost: the write took effect but the node does not
 * know (renewal: the version moves but the holder's deadline does not; takeover: the node holds the item but
 * does not start the group). A node can reach the store or not; the environment flips that at any time.
 *
 * Versions: a contender only compares "same version as the one I first saw". Instead of a (bounded, hence
 * aliasing) version number we keep seen[i] = "node i has read the current version and its wait runs"; every
 * write clears it for everyone. The takeover's condition `version = :seen` is then exactly seen[i].
 * The fencing token is "holder = i": a node process has one incarnation (a crash is permanent here), and a
 * takeover always changes the holder.
 *
 * ---------------------------------------------------------------------------------------------------------
 * Heartbeats and vouches
 * ---------------------------------------------------------------------------------------------------------
 * A running node sends heartbeats "I run G" to the other. A node that is not running G and receives one
 * answers with a vouch echoing that heartbeat's send time, and restarts its no-contend timer; it may contend
 * only when that timer has run out. The holder keeps running while (lease belief) OR (vouch validity); the
 * vouch validity counts from the *send time of the echoed heartbeat* on the holder's clock: we carry that
 * countdown inside the messages (a ghost of "echoed_send_time + W' - now"), so it keeps running while the
 * messages are in flight. Channels hold one message per direction (a newer send overwrites an older one),
 * messages may be delayed arbitrarily (they are dropped once useless) or lost at any time.
 * A vouch never *starts* a group: running begins only with a successful acquire/renew answer.
 *
 * Crash: a node may crash at any time (permanently): it stops running at once; its messages in flight may
 * still arrive.
 * A group stop is modelled as instantaneous at the end of the belief: the implementation starts stopping
 * early enough that the stop completes by then (that is its obligation, not the protocol's).
 *
 * Broken variants (compile with spin -DBROKEN=n), each must be caught:
 *   1: the holder runs until ttl after its renewal (no drift margin on the holder side)
 *   2: the contender ignores the vouch rule (takes over on the lease rule alone)
 *   3: the holder's vouch validity uses W without the drift margin and slack
 *   4: the holder counts its vouch validity from the vouch's arrival instead of the echoed heartbeat's send time
 */

#ifndef BROKEN
#define BROKEN 0
#endif

#define N    2
#define NONE 2

#if BROKEN == 1
#define HV_LO 4   /* local 5 = ttl: [floor(5/1.1), floor(5/0.9)+2] */
#define HV_HI 7
#else
#define HV_LO 2   /* local 3 = ttl - margin */
#define HV_HI 5
#endif

#define CW_LO 6   /* local 7 = ttl + margin */
#define CW_HI 9

#if BROKEN == 3
#define VV_LO 4   /* local 5 = W */
#define VV_HI 7
#else
#define VV_LO 2   /* local 3 = W(1-2rho) - slack */
#define VV_HI 5
#endif

#define NC_LO 6   /* local 7 = W(1+2rho) + slack */
#define NC_HI 9

/* Non-vacuity probes (compile with -DPROBE=n): each asserts that something the property depends on never
 * happens, so spin must find a counterexample, proving the model does reach it.
 *   1: a takeover succeeds and starts the group
 *   2: a node keeps running on vouches alone (its lease belief has run out) */
#ifndef PROBE
#define PROBE 0
#endif
#if PROBE == 1
#define PROBE_TAKEOVER assert(false)
#else
#define PROBE_TAKEOVER skip
#endif
#if PROBE == 2
#define PROBE_TICK assert(!(running[0] && lv[0] == 0) && !(running[1] && lv[1] == 0))
#else
#define PROBE_TICK skip
#endif

#if BROKEN == 4
#define VOUCHED_FOR(m) (1 + VV_HI)
#else
#define VOUCHED_FOR(m) (m)
#endif

#if BROKEN == 2
#define NO_RECENT_VOUCH(i) true
#else
#define NO_RECENT_VOUCH(i) (nc[i] == 0)
#endif

bool reach[N];      /* node i can talk to the store */
bool crashed[N];
bool running[N];    /* node i runs the group */
byte lv[N];         /* remaining real ticks of i's lease belief (0 = none) */
byte vv[N];         /* remaining real ticks of i's vouch-based validity (0 = none) */
bool seen[N];       /* contender i has read the current version; its wait cw[i] runs */
byte cw[N];         /* remaining real ticks of i's contender wait */
byte nc[N];         /* remaining real ticks of i's no-contend time after its last vouch */
byte holder = NONE; /* the lease item's holder (NONE: absent or released) */
byte hb[N];         /* heartbeat in flight from i to the other: 0 = none, else 1 + echo countdown */
byte vo[N];         /* vouch in flight from i to the other: 0 = none, else 1 + echoed countdown */

inline choose(v, lo, hi) {
    v = lo;
    do
    :: v < hi -> v++
    :: break
    od
}

inline written() {          /* any write: the version changes; every contender's wait restarts */
    seen[0] = false; cw[0] = 0;
    seen[1] = false; cw[1] = 0
}

inline dec(v) {
    if
    :: v > 0 -> v--
    :: else -> skip
    fi
}

inline dec_msg(m) {         /* countdown in a message; drop it when it is worth nothing */
    if
    :: m > 1 -> m--;
       if
       :: m == 1 -> m = 0
       :: else -> skip
       fi
    :: else -> m = 0
    fi
}

/* Timer starts. A timer that ends a belief (HOLD) only decides how long the node may stay running, and a node
 * may always stop earlier (action `stop`): so the longest real length covers every shorter one. A timer that
 * delays an action (WAIT) only enables that action, and every action is optional: so the shortest real length
 * covers every longer one. Compile with -DFULL_RANGES to choose every value of the range instead (slower;
 * same verdicts, see README.md). */
#ifdef FULL_RANGES
#define HOLD(v, lo, hi) choose(v, lo, hi)
#define WAIT(v, lo, hi) choose(v, lo, hi)
#else
#define HOLD(v, lo, hi) v = hi
#define WAIT(v, lo, hi) v = lo
#endif

/* lease acquired / renewed with a successful answer: the belief counts from the start of the write */
inline believe(i) {
    HOLD(lv[i], HV_LO, HV_HI);
    running[i] = true;
    /* the safety property: running only ever becomes true here, so checking here checks every state */
    assert(!(running[0] && running[1]))
}

/* Actions of node i (the other is j). Each is one atomic step whose first statement is its guard. Every action
 * is optional: a node may do it late or never (slow scheduling, lost timer ticks), which is what makes the
 * extreme timer values enough (see HOLD/WAIT above). */

/* acquire an absent or released item */
inline acquire(i) {
    atomic { !crashed[i] && reach[i] && holder == NONE ->
        holder = i; written();
        if
        :: believe(i)
        :: skip            /* answer lost */
        fi }
}

/* renew (or re-acquire the item this node still holds, same incarnation); renew_interval only matters for
 * liveness, so renewals may happen at any time */
inline renew(i) {
    atomic { !crashed[i] && reach[i] && holder == i ->
        written();
        if
        :: believe(i)
        :: skip            /* answer lost: the version moved, the deadline did not */
        fi }
}

/* a renewal that finds another holder: TDM-LEASE-002, stop the group */
inline not_holder(i, j) {
    atomic { !crashed[i] && reach[i] && holder == j && running[i] ->
        running[i] = false; lv[i] = 0; vv[i] = 0 }
}

/* the group stops for another reason (operator, failed resource): always allowed */
inline stop(i) {
    atomic { running[i] ->
        running[i] = false; lv[i] = 0; vv[i] = 0 }
}

/* release, after the group stopped */
inline release(i) {
    atomic { !crashed[i] && reach[i] && holder == i && !running[i] ->
        holder = NONE; written(); lv[i] = 0 }
}

/* contender reads the item held by the other: the wait starts at the first sight of this version */
inline observe(i, j) {
    atomic { !crashed[i] && reach[i] && holder == j && !seen[i] ->
        seen[i] = true; WAIT(cw[i], CW_LO, CW_HI) }
}

/* takeover: the same version for contender_wait, and no vouch sent for the no-contend time */
inline takeover(i, j) {
    atomic { !crashed[i] && reach[i] && holder == j && seen[i] && cw[i] == 0 && NO_RECENT_VOUCH(i) ->
        holder = i; written();
        if
        :: believe(i); PROBE_TAKEOVER
        :: skip            /* answer lost */
        fi }
}

/* heartbeat "I run G" (overwrites an older one still in flight); carries 1 + its vouch-validity countdown */
inline heartbeat(i) {
    atomic { !crashed[i] && running[i] ->
        HOLD(hb[i], 1 + VV_LO, 1 + VV_HI) }
}

/* receive the other's heartbeat: vouch for it unless this node runs the group itself */
inline on_heartbeat(i, j) {
    atomic { !crashed[i] && hb[j] != 0 ->
        if
        :: !running[i] -> vo[i] = hb[j]; WAIT(nc[i], NC_LO, NC_HI)
        :: else -> skip
        fi;
        hb[j] = 0 }
}

/* receive the other's vouch: extends the vouch validity of a running node only */
inline on_vouch(i, j) {
    atomic { !crashed[i] && vo[j] != 0 ->
        if
        :: running[i] && VOUCHED_FOR(vo[j]) - 1 > vv[i] -> vv[i] = VOUCHED_FOR(vo[j]) - 1
        :: else -> skip
        fi;
        vo[j] = 0 }
}

/* crash (permanent): everything the node knew is gone */
inline crash(i) {
    atomic { !crashed[i] ->
        crashed[i] = true; running[i] = false;
        lv[i] = 0; vv[i] = 0; seen[i] = false; cw[i] = 0; nc[i] = 0 }
}

inline stop_if_no_belief(i) {
    if
    :: running[i] && lv[i] == 0 && vv[i] == 0 -> running[i] = false
    :: else -> skip
    fi;
    if
    :: !running[i] -> vv[i] = 0
    :: else -> skip
    fi
}

/* one tick of real time: every countdown runs down; beliefs that ran out stop their group */
inline tick() {
    atomic {
        /* a plain first statement: an `if` with `else` first in a `do` option would take the `do`'s else */
        true;
        dec(lv[0]); dec(lv[1]); dec(vv[0]); dec(vv[1]);
        dec(cw[0]); dec(cw[1]); dec(nc[0]); dec(nc[1]);
        dec_msg(hb[0]); dec_msg(hb[1]); dec_msg(vo[0]); dec_msg(vo[1]);
        stop_if_no_belief(0); stop_if_no_belief(1);
        PROBE_TICK }
}

/* One process interleaves the actions of both nodes and of the environment. */
active proctype cluster() {
    do
    :: acquire(0)
    :: acquire(1)
    :: renew(0)
    :: renew(1)
    :: not_holder(0, 1)
    :: not_holder(1, 0)
    :: stop(0)
    :: stop(1)
    :: release(0)
    :: release(1)
    :: observe(0, 1)
    :: observe(1, 0)
    :: takeover(0, 1)
    :: takeover(1, 0)
    :: heartbeat(0)
    :: heartbeat(1)
    :: on_heartbeat(0, 1)
    :: on_heartbeat(1, 0)
    :: on_vouch(0, 1)
    :: on_vouch(1, 0)
    :: crash(0)
    :: crash(1)
    /* environment: the store becomes reachable or not for a node; a message is lost; time passes */
    :: atomic { reach[0] = !reach[0] }
    :: atomic { reach[1] = !reach[1] }
    :: atomic { hb[0] != 0 -> hb[0] = 0 }
    :: atomic { hb[1] != 0 -> hb[1] = 0 }
    :: atomic { vo[0] != 0 -> vo[0] = 0 }
    :: atomic { vo[1] != 0 -> vo[1] = 0 }
    :: tick()
    od
}
