-- Reserved for the customer portal.
SELECT 1;
