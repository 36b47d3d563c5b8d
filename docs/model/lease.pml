/*
 * tandem: lease arbitration + vouch + fencer, two nodes, one failover group, with faults of tandemd itself.
 * Safety property: never are both nodes' APPLICATIONS running the group (app[0] && app[1]); and never do two
 * live, unfrozen daemons both believe they run it.
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
 * does not start the group). A node that cannot reach the store simply issues no operation (see "Implicit
 * environment" below).
 *
 * Versions: a contender only compares "same version as the one I first saw". Instead of a (bounded, hence
 * aliasing) version number we keep seen[i] = "node i has read the current version and its wait runs"; every
 * write clears it for everyone. The takeover's condition `version = :seen` is then exactly seen[i].
 * Holder and incarnation: the item names a node (holder) and an incarnation; hinc = "that incarnation is the
 * holder node's current tandemd". A restarted tandemd is a new incarnation (hinc becomes false if the item names
 * its node); acquire, takeover and adopt write the writer's incarnation (hinc = true). A tandemd renews (or
 * re-acquires, LeaseStore::acquire's "ours" case) only an item naming its node and its own incarnation; an item
 * naming an earlier incarnation of its own node is, to it, held by another (it may take it over after the
 * waits, as the code's standby does). The fencing token is not modelled apart from holder + incarnation: the
 * re-adoption's condition (holder = this node AND token = the fencer's token) is modelled as "holder = this
 * node", which allows more writes than the code does (sound for safety).
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
 * messages may be delayed arbitrarily (they are dropped once useless) or never received (lost).
 * A vouch never *starts* a group: running begins only with a successful acquire/renew/adopt answer.
 * Heartbeats, vouches and their handling are tandemd's: a crashed or frozen tandemd sends and answers nothing.
 *
 * ---------------------------------------------------------------------------------------------------------
 * Implicit environment
 * ---------------------------------------------------------------------------------------------------------
 * Every action of a node is optional, and that already covers three environment events, which therefore have no
 * variable or action of their own (compile with -DEXPLICIT_ENV to add them back; same verdicts, README.md):
 *   - the store unreachable from a node: the node issues no store operation (or its write never lands);
 *   - a message lost: it is never received (receiving is optional; it is dropped once useless);
 *   - the application dying on its own: nothing in the protocol waits for it to die, so a behaviour where it
 *     died is covered by the same behaviour where it ran on (more running applications can only break the
 *     property sooner; the restart that may follow is action restart_app, which the fencer's kill enables too).
 * This removes states; the only behaviours it removes are ones the code does not have (e.g. a release after a
 * failed stop once the application died).
 *
 * ---------------------------------------------------------------------------------------------------------
 * A node: tandemd (the daemon), the application, the fencer
 * ---------------------------------------------------------------------------------------------------------
 * running[i] is the DAEMON's belief (role Active: it runs the group); app[i] is whether the group's
 * APPLICATION processes run on node i. The safety property is on app[].
 *
 * tandemd (dm[i]): UP (acts), FROZEN (SIGSTOP, a stall: acts not at all, its beliefs are kept and its deadlines,
 * absolute instants on the monotonic clock, keep running out in real time), DOWN (crashed: everything it knew
 * is gone; the application and the fencer live on), STARTING (restarted by systemd as a new incarnation, doing
 * its start-up: re-adopt, or clean up + release the stale lease; Runner::adopt_at_start, clean_up_at_start,
 * release_stale_lease). A frozen tandemd that resumes first re-checks its deadline (active_step on its next
 * tick) and stops at once if it has passed: resume is one step that does exactly that. Faults (crash, freeze)
 * are bounded: at most MAXF in all (default 1; check.sh also runs 2, --full 3), each at any time; a restart or
 * a resume comes at any time later, or never. A hang that systemd's watchdog ends is a freeze, then a crash.
 * An UP tandemd stops the group when its beliefs end (the "self-fencing" at the deadline); a frozen, crashed or
 * starting one does not: the application runs on until the fencer (or the start-up clean-up) ends it.
 * A crash of the whole node is a tandemd crash with the application dead and no restart: covered.
 *
 * The application: started by tandemd when the group starts (start_group: ARM the fencer, then start), and
 * started again by an active tandemd after it died (a monitor's restart, Runner::restart_resource, guarded by
 * the deadline: action restart_app). It stops when tandemd stops the group, when the fencer kills it, or when a
 * restarted tandemd's start-up clean-up stops it. A stop may also fail (a resource does not stop): tandemd then
 * no longer runs the group, does not disarm the fencer and does not release, and the application runs on until
 * the fencer fires (action stop_fails).
 *
 * The fencer (fd[i]): a countdown to the deadline it holds (0 = nothing armed, or fired). tandemd arms it with
 * the deadline it itself stops by, max(lease belief, vouch validity) (run_deadline): the countdown is a copy of
 * the daemon's own, so it is the same real instant (same machine, same clock rate; the boot-time conversion can
 * only make it earlier). ARM: at the group's start, before the application starts (start_group), and then by
 * the arming task at any time while the group runs (action armer, as late as it likes: a stalled arming task,
 * or ARMs that fail, are allowed, so the fencer may fire at an older, earlier deadline than tandemd's). An ARM
 * whose deadline has passed fires at once. DISARM: with a release after a clean stop, and at the end of a
 * start-up that did not re-adopt. When the countdown runs out the fencer kills the application, whatever tandemd
 * is doing. The fencer itself does not fail (a separate, hardened process; README.md, "Not modelled").
 *
 * RESTART OF THE APPLICATION: the model ARMs the fencer with the current deadline before a restart, as
 * start_group does before a start. The code (Runner::restart_resource) does NOT: that is BROKEN 10, which spin
 * catches (README.md, "Findings", gives the trail). The correct model is thus the code plus that one fix.
 *
 * A group stop (and the fencer's kill) is modelled as instantaneous at the end of the belief: the implementation
 * starts stopping early enough that the stop completes by then (that is its obligation, not the protocol's),
 * and the fencer's kill must fall within the margin's last tick (README.md; VARIANT 2 and BROKEN 5).
 *
 * Broken variants (compile with spin -DBROKEN=n), each must be caught:
 *   1: the holder runs until ttl after its renewal (no drift margin on the holder side)
 *   2: the contender ignores the vouch rule (takes over on the lease rule alone)
 *   3: the holder's vouch validity uses W without the drift margin and slack
 *   4: the holder counts its vouch validity from the vouch's arrival instead of the echoed heartbeat's send time
 *   5: the fencer fires two ticks after the deadline it was armed with: after the other node's earliest takeover
 *   6: the fencer is disarmed when tandemd dies (e.g. a fencer bound to tandemd's connection)
 *   7: a restarted tandemd that does not re-adopt disarms the fencer without stopping the application first
 *   8: tandemd's deadlines stand still while it is frozen and it does not re-check them when it resumes
 *      (a relative timer instead of an absolute instant)
 *   9: a restarted tandemd re-adopts without asking the fencer AND with an unconditional write (not conditional
 *      on holder = this node): it takes the lease back blindly
 *  10: an active tandemd restarts a dead application without ARMing the fencer first (what the code does today:
 *      the fencer's entry may have fired already, and if tandemd dies before the arming task's next ARM nothing
 *      ends that application)
 *  11: a resumed tandemd may act before its deadline check (which still comes at its next tick): a heartbeat
 *      sent then, echoed in a vouch, revives its vouch validity although its deadline had passed
 *
 * Variants that are expected to stay SAFE (compile with spin -DVARIANT=n):
 *   1: a restarted tandemd re-adopts without asking the fencer (still conditional on holder = this node): the
 *      conditional write alone keeps re-adoption safe; the fencer's deadline only decides whether the old
 *      application is still worth adopting.
 *   2: the fencer fires one tick after its deadline: the last tick of the margin absorbs it (BROKEN 5: two).
 */

#ifndef BROKEN
#define BROKEN 0
#endif
#ifndef VARIANT
#define VARIANT 0
#endif
#ifndef MAXF
#define MAXF 1
#endif
/* tandemd faults strike node 0 only, unless -DFAULTS_BOTH: the model is symmetric in the two nodes (same start
 * state, same actions), so with one fault (MAXF 1) every behaviour with a fault on node 1 is the mirror image of
 * one with the fault on node 0. With more faults, use -DFAULTS_BOTH (check.sh does). */
#ifdef FAULTS_BOTH
#define FAULTY(i) true
#else
#define FAULTY(i) (i == 0)
#endif

#define N    2
#define NONE 2

/* tandemd states */
#define UP       0
#define FROZEN   1
#define DOWN     2
#define STARTING 3

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

#if BROKEN == 5
#define FENCE_LATE 2
#elif VARIANT == 2
#define FENCE_LATE 1
#else
#define FENCE_LATE 0
#endif

/* Non-vacuity probes (compile with -DPROBE=n): each asserts that something the property depends on never
 * happens, so spin must find a counterexample, proving the model does reach it.
 *   1: a takeover succeeds and starts the group
 *   2: a node keeps running on vouches alone (its lease belief has run out)
 *   3: a restarted tandemd re-adopts the group (its application ran on meanwhile) and runs it again
 *   4: the fencer kills the application of a node whose tandemd is down
 *   5: the other node starts the group after the fencer killed the application of a node whose tandemd died
 *   6: a frozen tandemd resumes past its deadline and stops at its check (the fencer killed the application) */
#ifndef PROBE
#define PROBE 0
#endif
#if PROBE == 1
#define PROBE_TAKEOVER(i) assert(false)
#elif PROBE == 5
#define PROBE_TAKEOVER(i) assert(!killed[1 - i])
#else
#define PROBE_TAKEOVER(i) skip
#endif
#if PROBE == 2
#define PROBE_TICK assert(!(running[0] && lv[0] == 0) && !(running[1] && lv[1] == 0))
#else
#define PROBE_TICK skip
#endif
#if PROBE == 3
#define PROBE_ADOPT(i) assert(!app[i])   /* the old application still runs when the new tandemd adopts it */
#else
#define PROBE_ADOPT(i) skip
#endif
#if PROBE == 4 || PROBE == 5
#define PROBE_KILL(i) if :: dm[i] == DOWN -> KILLED(i) :: else -> skip fi
#else
#define PROBE_KILL(i) skip
#endif
#if PROBE == 4
#define KILLED(i) assert(false)
#elif PROBE == 5
bool killed[N];     /* ghost (probe 5 only): the fencer killed i's application while i's tandemd was down */
#define KILLED(i) killed[i] = true
#endif
#if PROBE == 6
#define PROBE_RESUME(i) assert(app[i] || fd[i] != 0)
#else
#define PROBE_RESUME(i) skip
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

#ifdef EXPLICIT_ENV
bool reach[N];      /* node i can talk to the store */
#define REACH(i) reach[i]
#else
#define REACH(i) true
#endif
byte dm[N];         /* node i's tandemd: UP, FROZEN, DOWN, STARTING */
bool running[N];    /* tandemd i believes it runs the group (role Active) */
bool app[N];        /* the group's application runs on node i */
byte fd[N];         /* node i's fencer: remaining real ticks until it kills the application (0 = none/fired) */
byte lv[N];         /* remaining real ticks of i's lease belief (0 = none) */
byte vv[N];         /* remaining real ticks of i's vouch-based validity (0 = none) */
bool seen[N];       /* contender i has read the current version; its wait cw[i] runs */
byte cw[N];         /* remaining real ticks of i's contender wait */
byte nc[N];         /* remaining real ticks of i's no-contend time after its last vouch */
byte holder = NONE; /* the lease item's holder node (NONE: absent or released) */
bool hinc;          /* the item's incarnation is the holder node's current tandemd */
byte hb[N];         /* heartbeat in flight from i to the other: 0 = none, else 1 + echo countdown */
byte vo[N];         /* vouch in flight from i to the other: 0 = none, else 1 + echoed countdown */
byte faults;        /* tandemd faults (crash, freeze) so far, at most MAXF */

/* the item is held, and not by tandemd i's own incarnation: for i, another holder (maybe i's earlier self) */
#define HELD_BY_OTHER(i) (holder != NONE && (holder != i || !hinc))
/* the item names tandemd i itself */
#define MINE(i) (holder == i && hinc)

/* The safety property, checked wherever an application starts or a tandemd's belief can become current again
 * (an application only ever starts in app_on; a belief only becomes current in believe and resume).
 * -DAPPS_ONLY checks the applications alone: check.sh uses it for the broken variants, so that each of them is
 * shown to lead to two running applications, not merely to two beliefs. */
#ifdef APPS_ONLY
#define SAFE assert(!(app[0] && app[1]))
#else
#define SAFE assert(!(app[0] && app[1]) && \
                    !(dm[0] == UP && running[0] && dm[1] == UP && running[1]))
#endif

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
 * may always stop earlier (action `stop`): so the longest real length covers every shorter one (the fencer's
 * countdown is a copy of it: a later kill covers an earlier one, as an application that died early is covered by
 * one that ran on, see "Implicit environment"). A timer that delays an action (WAIT) only enables that action,
 * and every action is optional: so the shortest real length covers every longer one. Compile with -DFULL_RANGES
 * to choose every value of the range instead (far larger: it does not complete, see README.md). */
#ifdef FULL_RANGES
#define HOLD(v, lo, hi) choose(v, lo, hi)
#define WAIT(v, lo, hi) choose(v, lo, hi)
#else
#define HOLD(v, lo, hi) v = hi
#define WAIT(v, lo, hi) v = lo
#endif

/* ARM the fencer with tandemd i's own deadline: the later of its lease belief and its vouch validity (the same
 * countdowns, so the same real instant). A deadline already passed fires at once. */
inline arm(i) {
    if
    :: lv[i] > vv[i] -> fd[i] = lv[i] + FENCE_LATE
    :: else -> fd[i] = vv[i] + FENCE_LATE
    fi;
    if
    :: fd[i] == 0 -> app[i] = false
    :: else -> skip
    fi
}

/* the application starts (or starts again) on node i */
inline app_on(i) {
    app[i] = true;
    SAFE
}

/* lease acquired / renewed / adopted with a successful answer: the belief counts from the start of the write.
 * A group that was not running starts: ARM the fencer, then start the application (start_group). A renewal of a
 * running group only moves the belief; the arming task passes it on to the fencer later (action armer). */
inline believe(i) {
    HOLD(lv[i], HV_LO, HV_HI);
    if
    :: !running[i] -> running[i] = true; arm(i); app_on(i)
    :: else -> SAFE
    fi
}

/* Actions of node i (the other is j). Each is one atomic step whose first statement is its guard. Every action
 * is optional: a node may do it late or never (slow scheduling, lost timer ticks), which is what makes the
 * extreme timer values enough (see HOLD/WAIT above). */

/* acquire an absent or released item */
inline acquire(i) {
    atomic { dm[i] == UP && REACH(i) && holder == NONE ->
        holder = i; hinc = true; written();
        if
        :: believe(i)
        :: skip            /* answer lost */
        fi }
}

/* renew (or re-acquire the item this tandemd still holds, same incarnation); renew_interval only matters for
 * liveness, so renewals may happen at any time */
inline renew(i) {
    atomic { dm[i] == UP && REACH(i) && MINE(i) ->
        written();
        if
        :: believe(i)
        :: skip            /* answer lost: the version moved, the deadline did not */
        fi }
}

/* a renewal that finds another holder: TDM-LEASE-002, stop the group */
inline not_holder(i) {
    atomic { dm[i] == UP && REACH(i) && !MINE(i) && running[i] ->
        running[i] = false; app[i] = false; lv[i] = 0; vv[i] = 0 }
}

/* the group stops for another reason (operator, failed resource): always allowed */
inline stop(i) {
    atomic { dm[i] == UP && running[i] ->
        running[i] = false; app[i] = false; lv[i] = 0; vv[i] = 0 }
}

/* a stop that fails (a resource did not stop, Admin/Move/Failed stops have no watchdog): tandemd no longer runs
 * the group (role Failed, lease keeper and arming task stopped) but the application runs on; no DISARM, no
 * release: the fencer fires at the last deadline it was given */
inline stop_fails(i) {
    atomic { dm[i] == UP && running[i] ->
        running[i] = false; lv[i] = 0; vv[i] = 0 }
}

/* release, after the group stopped (DISARM, then release, as stop_group does after a clean stop) */
inline release(i) {
    atomic { dm[i] == UP && REACH(i) && MINE(i) && !running[i] && !app[i] ->
        holder = NONE; written(); lv[i] = 0; fd[i] = 0 }
}

/* contender reads the item held by another: the wait starts at the first sight of this version */
inline observe(i) {
    atomic { dm[i] == UP && REACH(i) && HELD_BY_OTHER(i) && !seen[i] ->
        seen[i] = true; WAIT(cw[i], CW_LO, CW_HI) }
}

/* takeover: the same version for contender_wait, and no vouch sent for the no-contend time */
inline takeover(i) {
    atomic { dm[i] == UP && REACH(i) && HELD_BY_OTHER(i) && seen[i] && cw[i] == 0 && NO_RECENT_VOUCH(i) ->
        holder = i; hinc = true; written();
        if
        :: believe(i); PROBE_TAKEOVER(i)
        :: skip            /* answer lost */
        fi }
}

/* the arming task: re-ARM the fencer with the current deadline, at any time while the group runs */
inline armer(i) {
    atomic { dm[i] == UP && running[i] -> arm(i) }
}

/* the application dies on its own (a failure): only with -DEXPLICIT_ENV, see "Implicit environment" */
inline app_dies(i) {
    atomic { app[i] -> app[i] = false }
}

/* an active tandemd starts the dead application again (a monitor's restart; Runner::restart_resource). The start
 * is guarded by the deadline (Runner::guarded): some belief must be left. The correct protocol ARMs the fencer
 * first, as start_group does; BROKEN 10 does not. */
inline restart_app(i) {
    atomic { dm[i] == UP && running[i] && !app[i] && (lv[i] > 0 || vv[i] > 0) ->
#if BROKEN != 10
        arm(i);
#endif
        app_on(i) }
}

/* heartbeat "I run G" (overwrites an older one still in flight); carries 1 + its vouch-validity countdown */
inline heartbeat(i) {
    atomic { dm[i] == UP && running[i] ->
        HOLD(hb[i], 1 + VV_LO, 1 + VV_HI) }
}

/* receive the other's heartbeat: vouch for it unless this node's tandemd runs the group itself (a starting
 * tandemd vouches too: its first wire state says "vouch") */
inline on_heartbeat(i, j) {
    atomic { (dm[i] == UP || dm[i] == STARTING) && hb[j] != 0 ->
        if
        :: !running[i] -> vo[i] = hb[j]; WAIT(nc[i], NC_LO, NC_HI)
        :: else -> skip
        fi;
        hb[j] = 0 }
}

/* receive the other's vouch: extends the vouch validity of a running node only */
inline on_vouch(i, j) {
    atomic { dm[i] == UP && vo[j] != 0 ->
        if
        :: running[i] && VOUCHED_FOR(vo[j]) - 1 > vv[i] -> vv[i] = VOUCHED_FOR(vo[j]) - 1
        :: else -> skip
        fi;
        vo[j] = 0 }
}

/* ---- tandemd faults ---------------------------------------------------------------------------------- */

/* tandemd dies (crash, OOM kill, watchdog abort): everything it knew is gone; the application and the fencer live
 * on. (A crash of the whole node is this plus the application's death, with no restart.) */
inline dcrash(i) {
    atomic { FAULTY(i) && faults < MAXF && dm[i] != DOWN ->
        faults++; dm[i] = DOWN;
        running[i] = false; lv[i] = 0; vv[i] = 0; seen[i] = false; cw[i] = 0; nc[i] = 0;
#if BROKEN == 6
        fd[i] = 0;
#endif
        skip }
}

/* tandemd freezes (SIGSTOP, a stall): it keeps its beliefs and does nothing */
inline freeze(i) {
    atomic { FAULTY(i) && faults < MAXF && dm[i] == UP -> faults++; dm[i] = FROZEN }
}

/* tandemd resumes; its first action is the deadline check of its next tick (active_step): past the deadline, it
 * stops the group at once. BROKEN 8: its deadlines stood still while it was frozen and it does not check.
 * BROKEN 11: it acts before that check (the check of its next tick still comes). */
inline resume(i) {
    atomic { dm[i] == FROZEN -> dm[i] = UP;
#if BROKEN != 8 && BROKEN != 11
        if
        :: running[i] && lv[i] == 0 && vv[i] == 0 -> PROBE_RESUME(i); running[i] = false; app[i] = false
        :: else -> skip
        fi;
#endif
        SAFE }
}

/* systemd starts tandemd again: a new incarnation (an item naming this node now names an earlier incarnation) */
inline drestart(i) {
    atomic { dm[i] == DOWN -> dm[i] = STARTING;
        if
        :: holder == i -> hinc = false
        :: else -> skip
        fi }
}

/* start-up, case 1 (Runner::adopt_at_start): the fencer holds an unexpired deadline for the group, so this node
 * may still run it; re-adopt = renew the lease under the fencer's token, conditional on holder = this node
 * (records the new incarnation), then start_group (ARM, start: the running application is kept). An answer lost
 * (timed out) counts as a failed re-adoption: the start-up goes on with case 2 (action no_adopt). */
#if VARIANT == 1 || BROKEN == 9
#define FENCER_SAYS_ADOPT(i) true
#else
#define FENCER_SAYS_ADOPT(i) (fd[i] > 0)
#endif
#if BROKEN == 9
#define ADOPT_CONDITION(i) true
#else
#define ADOPT_CONDITION(i) (holder == i)
#endif
inline adopt(i) {
    atomic { dm[i] == STARTING && REACH(i) && FENCER_SAYS_ADOPT(i) && ADOPT_CONDITION(i) ->
        holder = i; hinc = true; written();
        if
        :: PROBE_ADOPT(i); dm[i] = UP; believe(i)
        :: skip            /* answer lost */
        fi }
}

/* start-up, case 2 (no unexpired deadline: fired or none; or re-adoption not possible): clean_up_at_start stops
 * whatever of the group still runs here, then release_stale_lease releases an item that still names this node
 * (conditional on its token: on holder = this node), if the store answers, and DISARMs the fencer.
 * BROKEN 7: the clean-up does not stop the application, and the DISARM takes away the fencer's kill. */
inline no_adopt(i) {
    atomic { dm[i] == STARTING ->
#if BROKEN != 7
        app[i] = false;
#endif
        if
        :: REACH(i) && holder == i -> holder = NONE; written()
        :: skip            /* store unreachable, or the release's answer lost before it took effect */
        fi;
        fd[i] = 0; dm[i] = UP }
}

/* ---- time -------------------------------------------------------------------------------------------- */

/* the fencer's countdown; at the deadline it kills the application, whatever tandemd does */
inline fence_tick(i) {
    if
    :: fd[i] > 0 -> fd[i]--;
       if
       :: fd[i] == 0 -> PROBE_KILL(i); app[i] = false
       :: else -> skip
       fi
    :: else -> skip
    fi
}

/* an UP tandemd checks its deadline at every tick and stops the group when no belief is left (a frozen, dead or
 * starting one does not) */
inline daemon_tick(i) {
    if
    :: dm[i] == UP && running[i] && lv[i] == 0 && vv[i] == 0 -> running[i] = false; app[i] = false
    :: else -> skip
    fi;
    if
    :: !running[i] -> vv[i] = 0
    :: else -> skip
    fi
}

#if BROKEN == 8
#define DEC_BELIEF(i) if :: dm[i] != FROZEN -> dec(lv[i]); dec(vv[i]) :: else -> skip fi
#else
#define DEC_BELIEF(i) dec(lv[i]); dec(vv[i])
#endif

/* one tick of real time: every countdown runs down; beliefs that ran out stop their group; deadlines that ran
 * out fire their fencer */
inline tick() {
    atomic {
        /* a plain first statement: an `if` with `else` first in a `do` option would take the `do`'s else */
        true;
        DEC_BELIEF(0); DEC_BELIEF(1);
        dec(cw[0]); dec(cw[1]); dec(nc[0]); dec(nc[1]);
        dec_msg(hb[0]); dec_msg(hb[1]); dec_msg(vo[0]); dec_msg(vo[1]);
        fence_tick(0); fence_tick(1);
        daemon_tick(0); daemon_tick(1);
        PROBE_TICK }
}

/* One process interleaves the actions of both nodes and of the environment. */
active proctype cluster() {
    do
    :: acquire(0)
    :: acquire(1)
    :: renew(0)
    :: renew(1)
    :: not_holder(0)
    :: not_holder(1)
    :: stop(0)
    :: stop(1)
    :: stop_fails(0)
    :: stop_fails(1)
    :: release(0)
    :: release(1)
    :: observe(0)
    :: observe(1)
    :: takeover(0)
    :: takeover(1)
    :: armer(0)
    :: armer(1)
    :: restart_app(0)
    :: restart_app(1)
    :: heartbeat(0)
    :: heartbeat(1)
    :: on_heartbeat(0, 1)
    :: on_heartbeat(1, 0)
    :: on_vouch(0, 1)
    :: on_vouch(1, 0)
    /* tandemd faults, restarts and start-up */
    :: dcrash(0)
    :: dcrash(1)
    :: freeze(0)
    :: freeze(1)
    :: resume(0)
    :: resume(1)
    :: drestart(0)
    :: drestart(1)
    :: adopt(0)
    :: adopt(1)
    :: no_adopt(0)
    :: no_adopt(1)
    /* environment: time passes. With -DEXPLICIT_ENV also: the store becomes reachable or not for a node; a
     * message is lost; an application dies (each is already covered, see "Implicit environment" above) */
#ifdef EXPLICIT_ENV
    :: atomic { reach[0] = !reach[0] }
    :: atomic { reach[1] = !reach[1] }
    :: atomic { hb[0] != 0 -> hb[0] = 0 }
    :: atomic { hb[1] != 0 -> hb[1] = 0 }
    :: atomic { vo[0] != 0 -> vo[0] = 0 }
    :: atomic { vo[1] != 0 -> vo[1] = 0 }
    :: app_dies(0)
    :: app_dies(1)
#endif
    :: tick()
    od
}
