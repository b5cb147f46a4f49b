-- in_flight: order
SELECT q.k
FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
CROSS APPLY (SELECT CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS native
             FROM OPENJSON(N'[' + q.k + N']') WITH ([ORDER_NO] int '$[0]') AS k) AS n
WHERE EXISTS (SELECT 1 FROM [tandem].[outbox] AS o
              WHERE o.entity = N'order' AND o.key_prefix = LEFT(n.native, 400) AND o.[key] = n.native);

-- in_flight: order_item
SELECT q.k
FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
CROSS APPLY (SELECT CONVERT(nvarchar(max), (SELECT k.[ORDER_NO] AS [k1], k.[LINE_NO] AS [k2] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS native
             FROM OPENJSON(N'[' + q.k + N']') WITH ([ORDER_NO] int '$[0]', [LINE_NO] int '$[1]') AS k) AS n
WHERE EXISTS (SELECT 1 FROM [tandem].[outbox] AS o
              WHERE o.entity = N'order_item' AND o.key_prefix = LEFT(n.native, 400) AND o.[key] = n.native);

