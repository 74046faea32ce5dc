-- Reserved for the mesh server (health history, admin tokens, registry version).
SELECT 1;
