"""gameserver package."""
