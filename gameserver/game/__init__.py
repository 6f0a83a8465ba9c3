"""gameserver/game package."""
