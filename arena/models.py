"""Arena schema: battles, votes, ratings. Built by the arena issue; empty in the foundation."""
