// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title NoxRegistry
/// @notice The staked membership of the NOX mix network. Operators stake an ERC-20
///         token to register a relay or exit node; nodes and clients build the
///         network topology from this contract's events and views.
/// @dev Invariants (checked by the invariant tests):
///      * the token balance held equals the sum of active stakes plus pending unstakes;
///      * `topologyFingerprint` is the XOR of keccak256(operator) over the registered set;
///      * slashed funds leave the contract: a share to the burn address, the rest to the
///        reporter, never to the slasher.
///      There is no way to register without stake.
contract NoxRegistry is AccessControl, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice What a node does.
    enum Role {
        Relay,
        Exit
    }

    /// @notice A registered (or leaving) node.
    struct Node {
        bytes32 identityKey; // Ed25519 libp2p public key
        string multiaddr;
        Role role;
        uint8 layer; // 0 entry, 1 mix (relays); 2 exit
        uint256 stake; // active stake (0 once unstaking)
        uint256 pendingUnstake; // stake waiting for the unstake delay, still slashable
        uint64 unstakeAvailableAt;
        bool registered; // part of the topology
    }

    /// @notice Role allowed to slash.
    bytes32 public constant SLASHER_ROLE = keccak256("NOX_SLASHER");
    /// @notice Where the burnt share of a slash goes.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice Layer of every exit node.
    uint8 public constant EXIT_LAYER = 2;
    /// @notice Longest multiaddr accepted, in bytes.
    uint256 public constant MAX_MULTIADDR_LEN = 256;
    /// @notice Bounds of the admin parameters.
    uint256 public constant MAX_MIN_STAKE = 1e30;
    uint64 public constant MIN_UNSTAKE_DELAY = 60;
    uint64 public constant MAX_UNSTAKE_DELAY = 90 days;
    uint16 public constant BPS = 10_000;

    /// @notice The staking token.
    IERC20 public immutable stakeToken;
    /// @notice Minimum active stake of a registered node.
    uint256 public minStake;
    /// @notice Seconds between `requestUnstake` and `executeUnstake`.
    uint64 public unstakeDelay;
    /// @notice Share of a slash that is burnt, in basis points; the rest goes to the reporter.
    uint16 public slashBurnBps;
    /// @notice XOR of keccak256(operator address) over all registered nodes.
    bytes32 public topologyFingerprint;

    mapping(address operator => Node) private _nodes;
    mapping(bytes32 identityKey => address operator) public operatorOfIdentity;
    address[] private _registered;
    mapping(address operator => uint256 indexPlusOne) private _index;

    event NodeRegistered(
        address indexed operator, bytes32 indexed identityKey, Role role, uint8 layer, uint256 stake, string multiaddr
    );
    event StakeAdded(address indexed operator, uint256 amount, uint256 newStake);
    event UnstakeRequested(address indexed operator, uint256 amount, uint64 availableAt);
    event Unstaked(address indexed operator, uint256 amount);
    event NodeRemoved(address indexed operator, bytes32 indexed identityKey);
    event NodeSlashed(
        address indexed operator, address indexed reporter, uint256 amount, uint256 burnt, uint256 reporterReward
    );
    event MinStakeChanged(uint256 oldValue, uint256 newValue);
    event UnstakeDelayChanged(uint64 oldValue, uint64 newValue);
    event SlashBurnBpsChanged(uint16 oldValue, uint16 newValue);

    error ZeroAddress();
    error AlreadyRegistered(address operator);
    error NotRegistered(address operator);
    error InsufficientStake(uint256 provided, uint256 required);
    error ZeroIdentityKey();
    error IdentityKeyTaken(bytes32 identityKey, address operator);
    error InvalidMultiaddr();
    error UnstakePending(address operator);
    error NoPendingUnstake(address operator);
    error UnstakeDelayNotOver(uint64 availableAt, uint64 nowTs);
    error ZeroAmount();
    error SlashExceedsStake(uint256 amount, uint256 available);
    error InvalidReporter(address reporter);
    error ParameterOutOfBounds();

    /// @param token The staking token.
    /// @param admin Holder of the admin role (parameters, pause, slasher management).
    /// @param minStake_ Initial minimum stake.
    /// @param unstakeDelay_ Initial unstake delay in seconds.
    /// @param slashBurnBps_ Initial burnt share of a slash, in basis points.
    constructor(IERC20 token, address admin, uint256 minStake_, uint64 unstakeDelay_, uint16 slashBurnBps_) {
        if (address(token) == address(0) || admin == address(0)) revert ZeroAddress();
        stakeToken = token;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setMinStake(minStake_);
        _setUnstakeDelay(unstakeDelay_);
        _setSlashBurnBps(slashBurnBps_);
    }

    // ------------------------------------------------------------------ operators

    /// @notice Registers the caller's node, staking `amount` (pulled with transferFrom).
    /// @param identityKey The node's Ed25519 identity key; unique across the registry.
    /// @param multiaddr Where the node listens (libp2p multiaddr, at most 256 bytes).
    /// @param role Relay (layer from the address) or Exit (layer 2).
    /// @param amount Stake, at least `minStake`.
    function register(bytes32 identityKey, string calldata multiaddr, Role role, uint256 amount)
        external
        whenNotPaused
        nonReentrant
    {
        Node storage n = _nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered(msg.sender);
        if (n.pendingUnstake != 0) revert UnstakePending(msg.sender);
        if (amount < minStake) revert InsufficientStake(amount, minStake);
        if (identityKey == bytes32(0)) revert ZeroIdentityKey();
        address holder = operatorOfIdentity[identityKey];
        if (holder != address(0)) revert IdentityKeyTaken(identityKey, holder);
        uint256 len = bytes(multiaddr).length;
        if (len == 0 || len > MAX_MULTIADDR_LEN) revert InvalidMultiaddr();

        uint8 layer = role == Role.Exit ? EXIT_LAYER : relayLayer(msg.sender);
        n.identityKey = identityKey;
        n.multiaddr = multiaddr;
        n.role = role;
        n.layer = layer;
        n.stake = amount;
        n.registered = true;
        operatorOfIdentity[identityKey] = msg.sender;
        _addToSet(msg.sender);
        emit NodeRegistered(msg.sender, identityKey, role, layer, amount, multiaddr);

        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Adds `amount` to the caller's active stake.
    function addStake(uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Node storage n = _nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        n.stake += amount;
        emit StakeAdded(msg.sender, amount, n.stake);
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Leaves the network: the node drops out of the topology at once and
    ///         its whole stake becomes withdrawable after `unstakeDelay`. The stake
    ///         stays slashable until it is withdrawn.
    function requestUnstake() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (!n.registered) revert NotRegistered(msg.sender);
        uint256 amount = n.stake;
        _deregister(msg.sender, n);
        n.pendingUnstake += amount;
        n.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
        emit UnstakeRequested(msg.sender, amount, n.unstakeAvailableAt);
    }

    /// @notice Withdraws the caller's pending unstake once the delay is over.
    function executeUnstake() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        uint256 amount = n.pendingUnstake;
        if (amount == 0) revert NoPendingUnstake(msg.sender);
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < n.unstakeAvailableAt) {
            revert UnstakeDelayNotOver(n.unstakeAvailableAt, uint64(block.timestamp));
        }
        n.pendingUnstake = 0;
        n.unstakeAvailableAt = 0;
        emit Unstaked(msg.sender, amount);
        stakeToken.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ slashing

    /// @notice Slashes `amount` from `operator` (active stake first, then pending
    ///         unstake). `slashBurnBps` of it is burnt, the rest goes to `reporter`,
    ///         which may not be the slasher. A registered node left below `minStake`
    ///         is removed from the topology; what remains of its stake becomes a
    ///         pending unstake.
    function slash(address operator, uint256 amount, address reporter) external onlyRole(SLASHER_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (reporter == address(0) || reporter == msg.sender || reporter == operator) {
            revert InvalidReporter(reporter);
        }
        Node storage n = _nodes[operator];
        uint256 available = n.stake + n.pendingUnstake;
        if (amount > available) revert SlashExceedsStake(amount, available);

        uint256 fromActive = amount <= n.stake ? amount : n.stake;
        n.stake -= fromActive;
        n.pendingUnstake -= amount - fromActive;

        uint256 burnt = amount * slashBurnBps / BPS;
        uint256 reward = amount - burnt;
        emit NodeSlashed(operator, reporter, amount, burnt, reward);

        if (n.registered && n.stake < minStake) {
            uint256 rest = n.stake;
            _deregister(operator, n);
            if (rest != 0) {
                n.pendingUnstake += rest;
                n.unstakeAvailableAt = uint64(block.timestamp) + unstakeDelay;
                emit UnstakeRequested(operator, rest, n.unstakeAvailableAt);
            }
        }

        if (burnt != 0) stakeToken.safeTransfer(BURN_ADDRESS, burnt);
        if (reward != 0) stakeToken.safeTransfer(reporter, reward);
    }

    // ------------------------------------------------------------------ admin

    /// @notice Sets the minimum stake (0 < value ≤ MAX_MIN_STAKE). Nodes already
    ///         registered below a raised minimum stay until they are slashed or leave.
    function setMinStake(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setMinStake(value);
    }

    /// @notice Sets the unstake delay in seconds (MIN_UNSTAKE_DELAY ≤ value ≤ MAX_UNSTAKE_DELAY).
    ///         Applies to unstake requests made after the change.
    function setUnstakeDelay(uint64 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setUnstakeDelay(value);
    }

    /// @notice Sets the burnt share of a slash in basis points (≤ 10,000).
    function setSlashBurnBps(uint16 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setSlashBurnBps(value);
    }

    /// @notice Stops registrations and stake additions. Unstaking and slashing go on.
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    /// @notice Lifts a pause.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ views

    /// @notice The layer a relay operated from `operator` belongs to:
    ///         `uint256(sha256(abi.encodePacked(operator))) % 2` (0 entry, 1 mix).
    function relayLayer(address operator) public pure returns (uint8) {
        return uint8(uint256(sha256(abi.encodePacked(operator))) % 2);
    }

    /// @notice The layer of `operator`: 2 for a registered exit, otherwise its relay layer.
    function layerOf(address operator) external view returns (uint8) {
        Node storage n = _nodes[operator];
        if (n.registered && n.role == Role.Exit) return EXIT_LAYER;
        return relayLayer(operator);
    }

    /// @notice The node record of `operator` (all zero if unknown).
    function getNode(address operator) external view returns (Node memory) {
        return _nodes[operator];
    }

    /// @notice Whether `operator` is part of the topology with at least the minimum stake.
    function isActive(address operator) external view returns (bool) {
        Node storage n = _nodes[operator];
        return n.registered && n.stake >= minStake;
    }

    /// @notice Number of registered nodes.
    function nodeCount() external view returns (uint256) {
        return _registered.length;
    }

    /// @notice Registered nodes `[start, start + count)` in registry order (order
    ///         changes when nodes leave). Returns fewer past the end.
    function nodesPage(uint256 start, uint256 count)
        external
        view
        returns (address[] memory operators, Node[] memory nodes)
    {
        uint256 total = _registered.length;
        uint256 end = start >= total ? start : (count > total - start ? total : start + count);
        uint256 len = end - start;
        operators = new address[](len);
        nodes = new Node[](len);
        for (uint256 i = 0; i < len; ++i) {
            address op = _registered[start + i];
            operators[i] = op;
            nodes[i] = _nodes[op];
        }
    }

    // ------------------------------------------------------------------ internals

    function _addToSet(address op) private {
        _registered.push(op);
        _index[op] = _registered.length;
        topologyFingerprint ^= keccak256(abi.encodePacked(op));
    }

    function _deregister(address op, Node storage n) private {
        uint256 idx = _index[op] - 1;
        uint256 last = _registered.length - 1;
        if (idx != last) {
            address moved = _registered[last];
            _registered[idx] = moved;
            _index[moved] = idx + 1;
        }
        _registered.pop();
        delete _index[op];
        topologyFingerprint ^= keccak256(abi.encodePacked(op));
        bytes32 key = n.identityKey;
        delete operatorOfIdentity[key];
        n.registered = false;
        n.stake = 0;
        emit NodeRemoved(op, key);
    }

    function _setMinStake(uint256 value) private {
        if (value == 0 || value > MAX_MIN_STAKE) revert ParameterOutOfBounds();
        emit MinStakeChanged(minStake, value);
        minStake = value;
    }

    function _setUnstakeDelay(uint64 value) private {
        if (value < MIN_UNSTAKE_DELAY || value > MAX_UNSTAKE_DELAY) revert ParameterOutOfBounds();
        emit UnstakeDelayChanged(unstakeDelay, value);
        unstakeDelay = value;
    }

    function _setSlashBurnBps(uint16 value) private {
        if (value > BPS) revert ParameterOutOfBounds();
        emit SlashBurnBpsChanged(slashBurnBps, value);
        slashBurnBps = value;
    }
}
