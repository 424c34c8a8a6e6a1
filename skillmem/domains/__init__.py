"""World packs: what one kind of world knows, behind the `skillmem.domain.Domain` protocol.

The core never imports a pack (a test holds it to that); whoever runs an agent in that world
passes the pack in: `HouseholdDomain()` from `skillmem.domains.alfworld` for ALFWorld-like games.
"""
