"""One example of every message type, both directions: the source of the golden fixtures.

Changing an example changes the fixtures: regenerate with ``python -m tests.shared.make_golden``
only when the wire format is meant to change (then the protocol docs change too).
"""

from __future__ import annotations

from shared import messages as m

SECRET = "correct-horse-battery-staple"
CHARACTER = m.Character(name="alice", level=2, xp=150, room="forest", x=120.5, y=300.0)

EXAMPLES: dict[str, m.Message] = {
    # client -> server
    "c2s_login": m.Login(rid=1, name="alice", secret=SECRET),
    "c2s_resume": m.Resume(rid=2, token="v1.c2Vzc2lvbg.c2lnbmF0dXJl"),
    "c2s_join": m.Join(rid=3, room="forest"),
    "c2s_leave": m.Leave(rid=4),
    "c2s_move": m.Move(x=130.25, y=310.0),
    "c2s_chat": m.Chat(text="hello, forest! \u00e9\u00e8 \U0001f332"),
    "c2s_attack": m.Attack(rid=5, mob=7),
    "c2s_me": m.Me(rid=6),
    "c2s_top": m.Top(rid=7, n=10),
    "c2s_rooms": m.Rooms(rid=9, room="arena"),
    "c2s_login_compact": m.Login(rid=1, name="alice", secret=SECRET, tick_format="compact"),
    "c2s_ping": m.Ping(rid=8),
    "c2s_ping_no_rid": m.Ping(),
    # server -> client
    "s2c_welcome": m.Welcome(
        rid=1, session="3f2a9c1e", token="v1.c2Vzc2lvbg.c2lnbmF0dXJl", character=CHARACTER, tick_rate=20.0,
        protocol=1,
    ),
    "s2c_joined": m.Joined(
        room="forest", you=12,
        players=[(12, "alice", 120.5, 300.0), (13, "bob_2", 140.0, 310.75)],
        mobs=[(7, "wolf", 150.0, 320.0, 120), (8, "boar", 600.0, 600.0, 0)],
        bounds=(1000.0, 1000.0),
    ),
    "s2c_joined_reply": m.Joined(rid=3, room="town", you=1, players=[(1, "alice", 500.0, 500.0)], mobs=[],
                                 bounds=(1000.0, 1000.0)),
    "s2c_left": m.Left(rid=4, room="forest"),
    "s2c_tick": m.Tick(
        n=4211, ts=1764129600.125,
        moved=[(12, 130.25, 310.0), (13, 141.5, 309.0)],
        joined=[(14, "carol", 380.0, 290.0)],
        left=[15],
        mobs=[(7, 105), (8, 120)],
    ),
    "s2c_tick_empty": m.Tick(n=4212, ts=1764129600.175),
    "s2c_chat": m.ChatMessage(from_="alice", text="hello, forest! \u00e9\u00e8 \U0001f332", ts=1764129600.2),
    "s2c_hit": m.Hit(rid=5, mob=7, dmg=15, hp=0),
    "s2c_xp": m.Xp(gained=50, xp=200, level=2, reason="kill:7"),
    "s2c_level_up": m.LevelUp(name="alice", level=3),
    "s2c_profile": m.Profile(rid=6, character=CHARACTER, kills=3),
    "s2c_top": m.TopEntries(rid=7, entries=[m.TopEntry(name="bob_2", level=4, xp=1000),
                                            m.TopEntry(name="alice", level=2, xp=150)]),
    "s2c_pong": m.Pong(rid=8, ts=1764129600.5),
    "s2c_error": m.Error(rid=5, code="out_of_range", message="mob 7 is 80.0 units away (range 64)"),
    "s2c_bye": m.Bye(reason="shutdown"),
    "s2c_redirect": m.Redirect(rid=3, url="ws://node-b.example:8765/ws", token="v1.bm9kZTI.c2lnbmF0dXJl"),
    # extension: room instances
    "s2c_rooms": m.RoomList(rid=9, entries=[m.RoomEntry(room="arena", players=8, max_players=8),
                                            m.RoomEntry(room="arena~2", players=3, max_players=8)]),
    "s2c_rooms_unlimited": m.RoomList(rid=10, entries=[m.RoomEntry(room="town", players=12)]),
    "s2c_error_room_full": m.Error(rid=11, code="room_full", message="room arena~2 is full (8 players)"),
    "s2c_welcome_compact": m.Welcome(
        rid=1, session="3f2a9c1e", token="v1.c2Vzc2lvbg.c2lnbmF0dXJl", character=CHARACTER, tick_rate=20.0,
        protocol=1, tick_format="compact",
    ),
    "s2c_tick_compact": m.Tick(n=4211, ts=1764129600.125, moved=[(12, 1303, 3100), (13, 1415, 3090)],
                               joined=[(14, "carol", 3800, 2900)], left=[15], mobs=[(7, 105)]),
    "s2c_joined_instance": m.Joined(rid=12, room="arena~2", you=3, players=[(3, "alice", 100.0, 100.0)],
                                    mobs=[], bounds=(200.0, 200.0)),
}

# Extension (issue 13): numbered server messages and resume with seq. The v1 shapes above stay as they
# were; each ``<name>_seq`` is ``<name>`` with ``seq`` as its last field, as the server splices it in.
SEQ_OF = {"s2c_left": 3, "s2c_chat": 41, "s2c_hit": 127, "s2c_xp": 128, "s2c_level_up": 300,
          "s2c_profile": 65_536, "s2c_top": 7, "s2c_error": 2, "s2c_rooms": 9}
EXAMPLES.update({f"{name}_seq": EXAMPLES[name].model_copy(update={"seq": seq})
                 for name, seq in SEQ_OF.items()})
EXAMPLES.update({
    "c2s_resume_seq": m.Resume(rid=2, token="v1.c2Vzc2lvbg.c2lnbmF0dXJl", seq=41),
    "c2s_resume_seq_zero": m.Resume(rid=2, token="v1.c2Vzc2lvbg.c2lnbmF0dXJl", seq=0),
    "s2c_welcome_recovered": EXAMPLES["s2c_welcome"].model_copy(update={"recovered": True, "replay": 6}),
    "s2c_welcome_unrecovered": EXAMPLES["s2c_welcome"].model_copy(update={"recovered": False, "replay": 0}),
})
